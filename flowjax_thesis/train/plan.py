"""Dry runs: what a training would cost, measured without training.

In a dry run (``run.dry_run`` is True, set by ``flowjax-thesis run NAME --dry-run``),
:func:`~flowjax_thesis.train.fit` hands its compiled runner to :func:`plan_training` instead of
training. That compiles the step exactly as the real run would (same transition, batch size,
mesh and mode), reads the compiled step's memory analysis (peak device bytes: arguments +
outputs + temporaries - aliased) and cost analysis (flops), times a few steps on the current
device, counts the parameters, and raises :class:`PlanComplete` carrying a
:class:`TrainingPlan`. The exception stops the experiment there: no training, no evaluation,
no figures. It derives from ``BaseException`` so that an experiment's ``except Exception``
(e.g. "this family failed, keep going") does not swallow it; the CLI catches it.

Multi-stage experiments are planned by their first training (the first ``fit`` call); the CLI
scales its time by the experiment's step counts where it can (:func:`estimate_hours`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# timing: at least this many timed calls, more while under the time budget (seconds)
MIN_TIMED_CALLS = 1
MAX_TIMED_CALLS = 5
TIME_BUDGET = 2.0
# steps per timed call in mode="scan" (the compiled chunk has this length)
PLAN_CHUNK = 3


@dataclass(frozen=True)
class TrainingPlan:
    """One training, planned. ``seconds_per_step`` is measured on ``devices`` after compiling
    (wall clock; ``cpu_seconds_per_step`` is this process's CPU time, which on a shared CPU says
    what a step costs when the machine is not contended, summed over XLA's threads);
    ``peak_bytes`` is the compiled step's device memory (None in ``mode="host"``, whose step is
    not one compiled program); ``flops_per_step`` from XLA's cost analysis (None if absent)."""

    tags: dict
    steps: int
    start_step: int
    batch_size: int | None
    chunk_size: int
    mode: str
    devices: tuple[str, ...]
    mesh: dict | None
    params: int
    params_from: str  # "state.params" or "state" (every floating entry of the state)
    compile_seconds: float
    timed_steps: int
    seconds_per_step: float
    cpu_seconds_per_step: float  # process CPU time: on a shared machine, what the step costs
    peak_bytes: int | None
    memory: dict | None
    flops_per_step: float | None

    @property
    def remaining_steps(self) -> int:
        return max(self.steps - self.start_step, 0)

    @property
    def estimate_seconds(self) -> float:
        """Seconds for this training's remaining steps at the measured rate (no evaluations)."""
        return self.seconds_per_step * self.remaining_steps

    def as_dict(self) -> dict:
        out = asdict(self)
        out["estimate_seconds"] = self.estimate_seconds
        return out


class PlanComplete(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised by ``fit`` in a dry run once its training is planned (``.plan``)."""

    def __init__(self, plan: TrainingPlan):
        super().__init__(f"planned training {plan.tags or '{}'}")
        self.plan = plan


def count_params(state: Any) -> tuple[int, str]:
    """Number of floating-point entries in ``state.params`` (or ``state["params"]``), else in
    the whole state; returns ``(count, where)``."""
    params = getattr(state, "params", None)
    where = "state.params"
    if params is None and isinstance(state, dict) and "params" in state:
        params = state["params"]
    if params is None:
        params, where = state, "state"
    floating = [
        x for x in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    return int(sum(int(np.prod(np.shape(x))) for x in floating)), where


def _memory(compiled) -> tuple[int | None, dict | None]:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None, None
    if stats is None:
        return None, None
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "temp_size_in_bytes",
        "alias_size_in_bytes",
        "generated_code_size_in_bytes",
    )
    memory = {f: int(getattr(stats, f, 0) or 0) for f in fields}
    peak = (
        memory["argument_size_in_bytes"]
        + memory["output_size_in_bytes"]
        + memory["temp_size_in_bytes"]
        - memory["alias_size_in_bytes"]
    )
    return peak, memory


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _block(tree) -> None:
    jax.block_until_ready(jax.tree.leaves(tree))


def plan_training(
    *,
    runner,
    mode: str,
    state: Any,
    data: Any,
    batches,
    host_key: np.ndarray,
    start: int,
    steps: int,
    chunk_size: int,
    batch_size: int | None,
    mesh,
    tags: dict,
    stack,
) -> TrainingPlan:
    """Compiles ``fit``'s runner, reads its memory and cost analyses and times a few steps.

    ``runner`` is ``fit``'s chunk runner (``mode="scan"``: ``(state, data, key, start, n)`` with
    ``n`` static), its jitted step runner (``"step"``: ``(state, data, key, step, batch)``) or
    the plain step (``"host"``); ``stack`` is ``fit``'s batch stacker.
    """
    n = max(1, min(PLAN_CHUNK, chunk_size, max(steps - start, 1)))
    step0 = np.int32(start)

    def args_for(at: int):
        if mode == "scan":
            stacked = data if batches is None else stack([batches(s) for s in range(at, at + n)])
            return (state, stacked, host_key, np.int32(at))
        return (state, data, host_key, np.int32(at), None if batches is None else batches(at))

    t0 = time.perf_counter()
    if mode == "scan":
        compiled = runner.lower(state, args_for(start)[1], host_key, step0, n).compile()
        per_call = n
    elif mode == "step":
        compiled = runner.lower(*args_for(start)).compile()
        per_call = 1
    else:  # "host": the step is plain Python around its own jitted pieces
        compiled, per_call = runner, 1
    peak, memory = _memory(compiled) if mode != "host" else (None, None)
    flops = _flops(compiled) if mode != "host" else None
    # (XLA's cost analysis counts a while loop's body once: the scan's flops are one step's)
    _block(compiled(*args_for(start)))  # warm-up (in mode="host" this call compiles)
    compile_seconds = time.perf_counter() - t0

    timed, elapsed, cpu, calls = 0, 0.0, 0.0, 0
    while calls < MIN_TIMED_CALLS or (calls < MAX_TIMED_CALLS and elapsed < TIME_BUDGET):
        at = start + timed
        args = args_for(at)
        t, c = time.perf_counter(), time.process_time()
        _block(compiled(*args))
        elapsed += time.perf_counter() - t
        cpu += time.process_time() - c
        timed += per_call
        calls += 1
    count, where = count_params(state)
    return TrainingPlan(
        tags=dict(tags),
        steps=int(steps),
        start_step=int(start),
        batch_size=batch_size,
        chunk_size=int(chunk_size),
        mode=mode,
        devices=tuple(f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()),
        mesh=None if mesh is None else {str(k): int(v) for k, v in mesh.shape.items()},
        params=count,
        params_from=where,
        compile_seconds=round(compile_seconds, 3),
        timed_steps=timed,
        seconds_per_step=elapsed / max(timed, 1),
        cpu_seconds_per_step=cpu / max(timed, 1),
        peak_bytes=peak,
        memory=memory,
        flops_per_step=flops,
    )


# --- a whole experiment's plan, as the CLI prints it ---------------------------------------------
# tuple-valued settings that repeat the training (one training per value): a rough count of the
# trainings of an experiment, used to scale the first training's time
SWEEP_SETTINGS = (
    "seeds",
    "models",
    "families",
    "datasets",
    "targets",
    "densities",
    "depths",
    "components",
    "latent_sizes",
    "methods",
    "posteriors",
    "planar_layers",
    "planar_rules",
    "num_topics",
    "batch_sizes",
    "rho_regs",
    "rules",
    "scales",
)
# settings worth showing in a plan (sizes and schedules)
_SHOWN = re.compile(
    r"(^|_)(steps?|epochs?|batch_sizes?|layers|hidden\w*|latent\w*|components?|depths|width"
    r"|levels|num_\w+|seeds|posteriors|families|models|datasets|targets|methods|scales|features"
    r"|time_budget|samples)$"
)


def sweep_size(cfg: Any) -> int:
    """The product of the lengths of the :data:`SWEEP_SETTINGS` that ``cfg`` has as tuples."""
    size = 1
    for name in SWEEP_SETTINGS:
        value = getattr(cfg, name, None)
        if isinstance(value, (tuple, list)) and value:
            size *= len(value)
    return size


def shown_settings(cfg: Any) -> dict:
    """The sizes and schedules of a settings dataclass (what a plan prints)."""
    fields = dataclasses.fields(cfg) if dataclasses.is_dataclass(cfg) else ()
    return {f.name: getattr(cfg, f.name) for f in fields if _SHOWN.search(f.name)}


def _bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def format_plan(record: dict) -> str:
    """The text ``--dry-run`` prints for one experiment (``record`` from the CLI's dry run)."""
    lines = [f"== plan: {record['experiment']} (profile {record['profile']})"]
    data = record.get("data")
    if record.get("missing"):
        lines.append(f"data:     MISSING -- {record['missing']}")
    elif data:
        kind = "STAND-IN (not the source's data)" if data["stand_in"] else "found"
        lines.append(f"data:     {kind}: {data['name']} -- {data['source']}")
    else:
        lines.append("data:     none loaded before the first training (generated or analytic)")
    devices = record.get("devices") or []
    lines.append(f"devices:  {len(devices)}: {', '.join(devices)}")
    settings = ", ".join(f"{k}={v}" for k, v in (record.get("settings") or {}).items())
    lines.append(f"settings: {settings}")
    plan = record.get("training")
    if plan:
        tags = ",".join(f"{k}={v}" for k, v in plan["tags"].items()) or "main"
        mesh = plan["mesh"] or "none (one device, no data parallelism)"
        batch = "full data / VI samples" if plan["batch_size"] is None else plan["batch_size"]
        lines += [
            f"first training [{tags}]: {plan['params']:,} parameters ({plan['params_from']}); "
            f"{plan['steps']:,} steps, batch {batch}, mode {plan['mode']} "
            f"(chunks of {plan['chunk_size']}); mesh {mesh}",
            f"  compile {plan['compile_seconds']:.1f} s; {plan['seconds_per_step']:.4g} s/step "
            f"(CPU time {plan['cpu_seconds_per_step']:.4g} s/step; timed "
            f"{plan['timed_steps']} steps on {devices[0] if devices else 'this device'})"
            f" -> {_duration(plan['estimate_seconds'])} for this training (no evaluations)",
            f"  one step: peak device memory {_bytes(plan['peak_bytes'])}"
            + (f", {plan['flops_per_step'] / 1e9:.3g} GFLOP" if plan.get("flops_per_step") else ""),
            f"whole experiment (rough): {record['trainings']} trainings like the first "
            f"(product of its sweep settings) -> {record['estimate_hours']:.2f} device-hours "
            "on this device",
        ]
    elif record.get("outcome"):
        lines.append(f"training: {record['outcome']}")
    status = "ready" if record["ready"] else "CANNOT RUN"
    lines.append(f"status:   {status} (dry run took {record['wall_seconds']:.0f} s)")
    return "\n".join(lines)
