"""Benchmarks for fused_losses: one ``bench_<loss>.py`` per loss, run by ``python -m bench.run``."""
