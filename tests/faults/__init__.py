"""Fault scenarios: real workers under kill -9, Redis and PostgreSQL restarts, misbehaving
receivers and a misbehaving Clever, each ending with ``assert_no_loss``."""
