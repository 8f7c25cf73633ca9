"""A budget of HTTP requests per time window, and a session that routes huggingface_hub's requests through it, so
a long publish stays under the account's rate limits."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zoo.cli_types import parse_request_budget


class RequestBudget:
    """At most `requests` HTTP requests in any `seconds`-long window: `spend()` waits until one more fits."""

    def __init__(self, requests: int, seconds: float) -> None:
        if requests < 1 or seconds <= 0:
            raise ValueError(f"--request-budget {requests}/{seconds}: needs at least 1 request per positive window")
        self.requests, self.seconds = requests, seconds
        self.sent: deque[float] = deque()
        self.lock = threading.Lock()
        self.waited = 0.0

    @classmethod
    def parse(cls, text: str) -> RequestBudget:
        """`N/SECONDS`, e.g. `1000/300` (the Hub's free-account API limit per 5 minutes)."""
        return cls(*parse_request_budget(text))

    def spend(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                while self.sent and now - self.sent[0] >= self.seconds:
                    self.sent.popleft()
                if len(self.sent) < self.requests:
                    self.sent.append(now)
                    return
                pause = self.seconds - (now - self.sent[0]) + 1e-3
                self.waited += pause
                time.sleep(pause)


@contextmanager
def budgeted_session(budget: RequestBudget | None) -> Iterator[None]:
    """Route every request of huggingface_hub's shared HTTP client through `budget` for the duration."""
    if budget is None:
        yield
        return
    from huggingface_hub.utils import _http, set_client_factory

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)

    def factory() -> Any:
        client = previous()
        hooks = dict(client.event_hooks)
        hooks["request"] = [*hooks.get("request", []), lambda request: budget.spend()]
        client.event_hooks = hooks
        return client

    set_client_factory(factory)
    try:
        yield
    finally:
        set_client_factory(previous)
