"""Benchmarks run by ``make bench``: figures as ratios measured side by side in one run."""
