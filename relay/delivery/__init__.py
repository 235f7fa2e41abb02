"""Delivering events as signed webhooks.

The attempt pipeline, in the order an attempt goes through it: ``consumer`` claims jobs from
the queue, ``attempt`` loads their deliveries, ``pipeline`` runs each attempt (``signing``
builds the Standard Webhooks body and headers, ``sender`` performs the HTTP request and
reports it as data), ``record`` writes the result and ``outcome`` decides what it means
(``schedule`` says when to try again). ``targets`` decides which addresses the relay may call,
at registration and again at connection time. ``redeliver``, ``replay`` and ``probe`` serve
the API's manual retries, replays of stored history and ``relay.test`` sends.

``signing``, ``targets``, ``schedule``, ``sender`` and ``outcome`` touch neither the database
nor the queue, so each is testable against real receivers and benchmarkable on its own;
``attempt``, ``record``, ``pipeline``, ``redeliver``, ``replay`` and ``consumer`` are where
they meet.
"""
