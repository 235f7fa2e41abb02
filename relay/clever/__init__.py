"""Client for Clever's pull-only Events API: parsing, pacing, backoff and token discovery."""
