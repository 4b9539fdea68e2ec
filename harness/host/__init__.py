"""Host services: the Docker engine and containers, QEMU, the serial console, host checks."""
