"""A fake OpenAI-compatible chat-completions server for tests and benchmarks (stdlib only).

Run it with `python -m fakellm --host 127.0.0.1 --port 8100`; see fakellm/server.py for the
per-request failure markers.
"""
