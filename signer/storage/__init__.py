"""Publish targets beyond a local directory: Azure Blob Storage (`azblob://`)."""

from __future__ import annotations

from signer.storage.azblob import BlobLocation, BlobTarget, WriteOutcome, parse_blob_url

__all__ = ["BlobLocation", "BlobTarget", "WriteOutcome", "parse_blob_url"]
