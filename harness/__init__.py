"""Confidential-boot firmware harness: build, inspect, measure and boot SEV OVMF."""
