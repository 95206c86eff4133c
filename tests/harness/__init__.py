"""Fake external parties and process control for the fault tests and benchmarks."""
