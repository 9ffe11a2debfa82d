"""Benchmark helpers: graph-level MAC counts and honest latency timing, so speed-ups are checkable."""
