"""A patch of accelerate: its optimizer step looks for `lomo_optim` on sys.path twice per step; the answer is cached."""

from __future__ import annotations

import functools


def cache_lomo_check() -> None:
    """accelerate's optimizer step asks twice per step whether `lomo_optim` is installed, each time a `find_spec`
    scan of sys.path (milliseconds on a busy file system); the answer does not change while a process runs."""
    from accelerate import optimizer as accelerate_optimizer

    check = accelerate_optimizer.is_lomo_available
    if not hasattr(check, "cache_info"):
        accelerate_optimizer.is_lomo_available = functools.cache(check)
