"""Reconciliation records: the append-only accounting lines finance closes months with."""
