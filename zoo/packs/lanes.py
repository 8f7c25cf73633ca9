"""Lanes: each member's own random streams (torch, numpy, random) inside a pack, and their JSON form."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import numpy as np
import torch

from zoo.training import rng_state, set_rng_state


class Lane:
    """One member's random streams: what it draws from while active is what it would draw trained alone."""

    def __init__(self, state: dict[str, Any] | None = None):
        self.state = state or rng_state()

    @contextlib.contextmanager
    def active(self):
        outside = rng_state()
        set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = rng_state()
            set_rng_state(outside)

    def to_json(self) -> dict[str, Any]:
        version, internal, gauss = self.state["python"]
        name, keys, pos, has_gauss, cached = self.state["numpy"]
        out = {"python": [version, list(internal), gauss],
               "numpy": [name, _encode(np.asarray(keys, dtype=np.uint32).tobytes()), int(pos), int(has_gauss),
                         float(cached)],
               "cpu": _encode(self.state["cpu"].numpy().tobytes())}
        if "cuda" in self.state:
            out["cuda"] = [_encode(s.numpy().tobytes()) for s in self.state["cuda"]]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lane:
        version, internal, gauss = data["python"]
        name, keys, pos, has_gauss, cached = data["numpy"]
        state = {"python": (version, tuple(internal), gauss),
                 "numpy": (name, np.frombuffer(base64.b64decode(keys), dtype=np.uint32).copy(), pos, has_gauss,
                           cached),
                 "cpu": _byte_tensor(data["cpu"])}
        if "cuda" in data and torch.cuda.is_available():
            state["cuda"] = [_byte_tensor(s) for s in data["cuda"]]
        return cls(state)


def lane_of(lane: Lane | None):
    """`lane.active()`, or no change of stream without a lane."""
    return lane.active() if lane is not None else contextlib.nullcontext()


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _byte_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()
