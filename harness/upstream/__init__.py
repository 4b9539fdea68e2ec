"""Upstream sources: pins, routes, downloads, and our patch series."""
