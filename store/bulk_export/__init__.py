"""Bulk downloads: daily files per province and parameter from the warehouse, with a manifest (README.md)."""
