"""SMS delivery: rendering, providers (SMPP, HTTP, file), attempts, receipts and webhooks."""
