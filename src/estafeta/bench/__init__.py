"""Benchmarks: each prints a Rich table and writes a JSON file; speed targets live here, not in tests."""
