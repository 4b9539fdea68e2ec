"""Parsers for OVMF firmware images: reset-vector GUID table, firmware volumes, PE."""
