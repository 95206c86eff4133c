"""Code pools: partners' codes, uploaded encrypted, allocated one redemption or exchange at a time."""
