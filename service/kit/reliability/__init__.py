"""Idempotency keys and the fault-injection checkpoints."""
