"""Fixtures of the publishing tests: every request must hit a route the test Hub knows; a synthetic zoo per module."""

from pathlib import Path

import pytest
from helpers.zoo_factory import make_synthetic_zoo


@pytest.fixture(autouse=True)
def no_unknown_routes(hub_server):
    """Every request of every client must hit a route the server knows (a client upgrade must fail loudly)."""
    before = len(hub_server.state.unknown_routes)
    yield
    assert hub_server.state.unknown_routes[before:] == []


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo") / "synthetic"
    make_synthetic_zoo(root, junk=True)
    return root
