"""cf-sign: content trust for conda-forge."""

__version__ = "0.1.0"
