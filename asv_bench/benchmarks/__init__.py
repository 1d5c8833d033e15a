"""fastbn asv benchmarks: see docs/benchmarks.md; shared inputs live in common.py."""
