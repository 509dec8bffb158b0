"""Benchmarks: build speed, layer size and cold start against the seed script (`python -m bench.run`)."""
