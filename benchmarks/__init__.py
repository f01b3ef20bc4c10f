"""Benchmarks: commands that print figures (and ratios against a baseline run in the same
process). Nothing here asserts a time; see the README for how to run them."""
