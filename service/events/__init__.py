"""Webhook events: what every domain publishes, their signing, delivery and log."""
