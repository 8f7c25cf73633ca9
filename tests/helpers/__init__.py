"""Shared test helpers, imported as `helpers.<module>` (tests/ is on sys.path through tests/conftest.py).

This package imports nothing itself: tests/conftest.py imports `helpers.hub_server` before any Hugging Face library
is loaded.
"""
