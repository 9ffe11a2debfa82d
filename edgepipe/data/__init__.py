"""Datasets, deterministic splits and transforms."""
