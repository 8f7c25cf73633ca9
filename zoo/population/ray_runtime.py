"""The Ray cluster under `zoo generate`: started (or joined) once per run, and watched, so that a run whose cluster
goes away ends with one line and exit 3 instead of Ray's own crash."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time

RAY_DIED = ("zoo generate: error: the Ray cluster under this run stopped ({}); finished members and epochs are "
            "kept: run the same command again to resume")
_RAY_STOPPING = threading.Event()


def _init_ray(address: str | None) -> None:
    """Join the Ray cluster at `address` (or $RAY_ADDRESS), else start one of our own; then watch it."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables off (verbose=0): the zoo shows its own progress
    # Ctrl-C: Tune's own SIGINT handler would end the stage's search quietly, say `tune.run(..., resume=True)` (wrong
    # here) and let the run go on to the next stage; without it Ctrl-C raises KeyboardInterrupt at once, and
    # cli_generate says how to resume
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # a Ray of our own (not one found running on this machine), stopped when we exit
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    atexit.register(_RAY_STOPPING.set)  # runs before Ray's own exit handler (registered earlier) stops it
    threading.Thread(target=_watch_ray, daemon=True, name="zoo-ray-watch").start()


def _ray_alive() -> str | None:
    """None while the run's Ray cluster answers, else what is wrong."""
    import ray

    node = ray._private.worker._global_node
    for kind in ("gcs_server", "raylet"):  # a Ray this process started: its own processes
        for info in (node.all_processes.get(kind, []) if node is not None else []):
            if info.process.poll() is not None:
                return f"its {kind} process {info.process.pid} exited"
    try:
        ray._private.worker.global_worker.gcs_client.internal_kv_get(b"zoo-ping", None, timeout=5)
    except Exception as err:  # noqa: BLE001 - a dead GCS fails in many ways
        return f"its GCS does not answer: {type(err).__name__}"
    return None


def _watch_ray(period: float = 3.0, tries: int = 3) -> None:
    """Ray's core worker ends this process without a Python error (exit 1, a C++ log line) about a minute after
    its cluster goes away: notice first, say so in one line, and exit 3."""
    import ray

    failures = 0
    while ray.is_initialized():
        time.sleep(period)
        try:
            problem = _ray_alive() if ray.is_initialized() else None
        except Exception:  # noqa: BLE001 - shutting down
            return
        failures = failures + 1 if problem else 0
        if _RAY_STOPPING.is_set():
            return
        if failures >= tries or (problem and "exited" in problem):
            print(RAY_DIED.format(problem), file=sys.stderr, flush=True)
            node = ray._private.worker._global_node
            if node is not None and node.all_processes:  # our own Ray: stop what is left of it
                try:
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
            os._exit(3)


def ray_died(err: BaseException) -> bool:
    """Whether an error raised by the search means that the Ray cluster under the run went away."""
    if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
        return False  # the error came before any Ray was started
    names = {type(e).__name__ for e in (err, err.__cause__, err.__context__) if e is not None}
    if names & {"RaySystemError", "RpcError", "NodeDiedError", "RayletDiedError", "LocalRayletDiedError"}:
        return True
    try:
        return _ray_alive() is not None
    except Exception:  # noqa: BLE001 - a half-stopped Ray
        return True
