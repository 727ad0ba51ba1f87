"""Benchmark scripts: each prints one JSON line of medians and ratios measured in one run."""
