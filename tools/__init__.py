"""Developer tools that ship outside the harness package: the benchmarks."""
