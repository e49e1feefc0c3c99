"""Helpers shared by the peer benchmarks: lazy imports, seeding, timing, results."""

from __future__ import annotations

import importlib
import math
import os
import time
from importlib import metadata
from typing import Any

INSTALL_HINT = "pip install flowjax_thesis[bench]"
TORCH_THREADS_ENV = "FLOWJAX_BENCH_TORCH_THREADS"
TORCH_THREADS = 2  # the benchmark machine has 2 cores


def torch_threads() -> int:
    """Threads for torch: 2 (the machine's cores) unless $FLOWJAX_BENCH_TORCH_THREADS.

    On a machine shared with other jobs, torch's 2 intra-op threads spin-wait on each
    other and an eager step can take several times longer; 1 thread shows that.
    """
    return int(os.environ.get(TORCH_THREADS_ENV, TORCH_THREADS))


def require(module: str) -> Any:
    """Import ``module`` or raise an ImportError that names the bench extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        top = module.split(".")[0]
        raise ImportError(
            f"The peer benchmark needs the optional package {top!r}: {INSTALL_HINT}"
        ) from err


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def setup_torch(seed: int) -> Any:
    """Import torch, pin it to 2 threads and seed every RNG it uses."""
    torch = require("torch")
    torch.set_num_threads(torch_threads())
    torch.manual_seed(seed)
    return torch


def check_steps(steps: int, warmup: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall) and ``sw.cpu_seconds``.

    ``cpu_seconds`` is this process's CPU time over the block (all threads); with the
    1-minute load average it helps tell a slow peer from a busy machine.
    """

    seconds: float = math.nan
    cpu_seconds: float = math.nan

    def __enter__(self) -> Stopwatch:
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._c0


def result(
    peer: str,
    version_str: str,
    steps: int,
    seconds: float | Stopwatch,
    compile_seconds: float | None,
    final_loss: float,
    **extra: Any,
) -> dict[str, Any]:
    """The result record every peer returns.

    ``seconds`` is the wall time of the ``steps`` timed steps only (warm-up excluded);
    ``compile_seconds`` is the wall time of the first call (for JAX peers this is
    tracing + XLA compilation + one step; for torch peers it is one eager step).
    ``seconds`` may be the :class:`Stopwatch` of the timed loop, which also records
    the loop's ``cpu_seconds``.
    """
    cpu = math.nan
    if isinstance(seconds, Stopwatch):
        seconds, cpu = seconds.seconds, seconds.cpu_seconds
    out = {
        "peer": peer,
        "version": version_str,
        "steps": int(steps),
        "seconds": float(seconds),
        "compile_seconds": None if compile_seconds is None else float(compile_seconds),
        "final_loss": float(final_loss),
        "seconds_per_1000_steps": float(seconds) * 1000.0 / int(steps),
        "cpu_seconds": float(cpu),
        "load_avg_1min": os.getloadavg()[0],
    }
    if "torch" in extra or version_str.startswith(version("torch")):
        out["torch_threads"] = torch_threads()
    out.update(extra)
    return out
