"""Redemptions: points in, a reserved reward out, exactly once."""
