"""Benchmarks for fused_losses: a ``bench_<loss>.py`` per loss, run by ``python -m bench.run``."""
