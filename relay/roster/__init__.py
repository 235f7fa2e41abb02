"""The roster: every district's records as the relay knows them now, and the sync that
compares them with Clever's Data API (``docs/architecture.md``, "The roster and the sync")."""
