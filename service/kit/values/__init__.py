"""Value types: money, phone numbers, ids, time formats."""
