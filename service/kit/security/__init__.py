"""Encryption at rest, its keys and their rotation."""
