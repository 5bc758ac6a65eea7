"""Micro-benchmarks of WSIS-Bench components (run as modules: python -m bench.benchmarks.<name>)."""
