"""Containerized builds of GRUB and OVMF from pinned sources plus our patch series."""
