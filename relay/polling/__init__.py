"""Polling Clever: the supervisor takes district leases (``leases``) and runs a poller per
district (``poller``), which pages ``/v3.1/events`` and stores each page in one transaction
(``store``), watching for cursors Clever may have expired (``gap``). ``discovery`` registers
the districts that share data with the app."""
