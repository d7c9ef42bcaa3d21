"""The channel layer over repodata.json: indexing, signing and verifying records."""
