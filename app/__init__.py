"""Vigil's server: HTTP API, websockets, ingest, storage and the command line."""

__version__ = "0.1.0"
