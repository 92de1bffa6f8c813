"""Helpers for tests and benchmarks: a real OpenAI-compatible HTTP server with scripted behaviour."""
