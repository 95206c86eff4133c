"""Campaigns: bulk awards to a list of recipients uploaded as a CSV, JSONL or XLSX file."""
