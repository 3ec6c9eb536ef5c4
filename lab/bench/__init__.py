"""Benchmarks: ``loupe bench`` writes JSON with the machine, versions, inputs and medians."""
