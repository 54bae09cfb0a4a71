"""Speed measurements; run them as modules: python -m benchmarks.render."""
