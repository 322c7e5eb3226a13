"""Parley's benchmark harness: the chat path measured side by side against its alternatives.

`bench/run` starts every server itself on loopback (PostgreSQL, two Redis instances, the
fake LLM, nginx with TLS, Gunicorn, Daphne, Celery), drives them with the load clients in this
package and writes bench/results/<date>.json and .md. BENCHMARKS.md explains each row.
"""
