"""Connectors: read-only views of systems of record (``contract``), discovered by entry point."""
