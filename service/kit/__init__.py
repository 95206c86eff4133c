"""The platform: what every domain stands on. It imports no domain package."""
