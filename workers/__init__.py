"""Dramatiq workers: thin actors, each calling one domain function."""
