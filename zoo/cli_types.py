"""Argument types of the command line that refuse bad values while the arguments are parsed (stdlib only, so
building the parser stays cheap): whole numbers within bounds, and `N/SECONDS` request budgets."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type`: a whole number >= `low` (and <= `high`), else an error naming the value and the bounds."""
    bounds = f"at least {low}" if high is None else f"between {low} and {high}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not a whole number (must be {bounds})") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value}: must be {bounds}")
        return value

    parse.__name__ = "whole number"  # what argparse names in its own messages
    return parse


def parse_request_budget(text: str) -> tuple[int, float]:
    """`N/SECONDS` (e.g. `900/300`) as (N, SECONDS); a ValueError naming the value when it is not one, or when N is
    below 1 or SECONDS not positive."""
    try:
        requests_text, seconds_text = text.split("/")
        requests, seconds = int(requests_text), float(seconds_text)
    except ValueError:
        raise ValueError(f"--request-budget {text!r}: expected N/SECONDS, e.g. 900/300") from None
    if requests < 1 or not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"--request-budget {text!r}: needs at least 1 request per positive, finite number of "
                         "seconds, e.g. 900/300")
    return requests, seconds


def request_budget(text: str) -> str:
    """An argparse `type`: a valid `N/SECONDS` budget, kept as given."""
    try:
        parse_request_budget(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--request-budget ")) from None
    return text
