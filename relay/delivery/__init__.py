"""Delivering events as signed webhooks: the pure building blocks, free of DB and queue.

``signing`` builds the Standard Webhooks body and headers, ``targets`` decides which addresses
the relay may call (at registration and again at connection time), ``schedule`` says when to try
again, and ``sender`` performs one HTTP attempt and reports it as data rather than raising. The
delivery job composes them with the database; keeping them pure makes each one testable against
real receivers and benchmarkable on its own.
"""
