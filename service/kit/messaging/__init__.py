"""Work for the workers: the transactional outbox and the job envelopes."""
