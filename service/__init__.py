"""Reward fulfillment service."""
