"""Benchmarks: scripts run by path (``python benchmarks/overhead.py``); a package only so
that the overhead benchmark's modules import each other by one name."""
