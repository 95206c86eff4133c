"""Sandbox keys: test rewards that touch no stock, budget or finance record."""
