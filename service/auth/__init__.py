"""API keys, roles and scopes."""
