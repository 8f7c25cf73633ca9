"""Shared test setup. The HF environment must be set before any Hugging Face library is imported: huggingface_hub
and datasets read HF_ENDPOINT (and Xet, cache, token settings) once, at import time. Keep this file to that env setup
plus fixtures; other test modules run in the same pytest process. pytest puts this file's folder, tests/, on sys.path:
the shared helpers are imported from there as `helpers.<module>`.
"""

import atexit
import os
import shutil
import socket
import sys
import tempfile


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HUB_PORT = _free_port()
HUB_ENDPOINT = f"http://127.0.0.1:{HUB_PORT}"
HF_TEST_TOKEN = "hf_testtoken_" + "x7Qz" * 6  # dummy; a test checks it never lands in a published file
_HF_TMP = tempfile.mkdtemp(prefix="zoo-tests-hf-")
atexit.register(shutil.rmtree, _HF_TMP, True)

os.environ.update({
    "HF_ENDPOINT": HUB_ENDPOINT,
    "HF_HUB_DISABLE_XET": "1",  # uploads take the LFS path the test server speaks
    "HF_HOME": os.path.join(_HF_TMP, "home"),
    "HF_DATASETS_CACHE": os.path.join(_HF_TMP, "datasets"),
    "HF_TOKEN": HF_TEST_TOKEN,
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MPLBACKEND": "Agg",
})
for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH",
             "HUGGINGFACE_HUB_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
    os.environ.pop(_key, None)

_STALE = [name for name in ("huggingface_hub", "datasets", "transformers") if name in sys.modules]

import pytest  # noqa: E402
from helpers.hub_server import HubServer  # noqa: E402  (stdlib only: imports no HF library)


@pytest.fixture(scope="session")
def hub_server():
    """A local stand-in for the Hub at HF_ENDPOINT, shared by the session."""
    if _STALE:
        pytest.fail(f"{', '.join(_STALE)} imported before tests/conftest.py set HF_ENDPOINT; the tests would reach "
                    "the real Hub")
    from huggingface_hub import constants

    if constants.ENDPOINT != HUB_ENDPOINT:
        pytest.fail(f"huggingface_hub uses endpoint {constants.ENDPOINT}, expected {HUB_ENDPOINT}")
    server = HubServer(port=HUB_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def no_unknown_routes(hub_server):
    """Every request of every client must hit a route the test Hub knows (a client upgrade must fail loudly)."""
    before = len(hub_server.state.unknown_routes)
    yield
    assert hub_server.state.unknown_routes[before:] == []


@pytest.fixture
def own_ray():
    """A Ray temp dir of this test's own; every process of that Ray is stopped at teardown, no other."""
    from helpers.processes import OwnRay

    ray = OwnRay()
    yield ray
    ray.stop()
