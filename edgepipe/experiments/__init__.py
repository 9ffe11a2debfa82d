"""Experiments over whole runs: grid sweeps and ensembles. A layer above pipeline.py (it drives pipeline
runs and reads their reports); only cli.py and benchmarks import it."""
