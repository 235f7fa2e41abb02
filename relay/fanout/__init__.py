"""Fan-out: which subscriptions want an event. ``matching`` is the pure rule
(``docs/architecture.md``, "Matching"); ``subscribers`` applies it inside the page's
transaction, so an event is never stored without its deliveries."""
