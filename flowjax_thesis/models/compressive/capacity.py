"""Matched capacity: parameter counts of image compressive flows, and the width of an
uncompressed flow that has as many parameters as a given compressed one.

A compressed flow carries the parameters of its compressive step on top of its bijective flow (a
VAE step with hidden widths ``(512, 256)`` on a flattened 28x28 latent has about 1.5M, the
two-scale width-32 flow about 26k), so comparing it with the same bijective flow without the step
compares capacities, not compression. :func:`matched_width` finds the coupling width of the
uncompressed flow (``build_flow("none", ...)``) whose parameter count is closest to a target;
:func:`capacity_gap` is the relative difference the experiments print and check (within 10%).
"""

from __future__ import annotations

import jax

from flowjax_thesis.models.compressive.flow import num_params


def count_params(flow) -> int:
    """Number of parameters of a :class:`CompressiveFlow` (shapes only, nothing computed)."""
    return num_params(jax.eval_shape(flow.init, jax.random.PRNGKey(0)))


def capacity_gap(num: int, target: int) -> float:
    """``|num - target| / target``."""
    if target <= 0:
        raise ValueError(f"the target parameter count must be positive, got {target}")
    return abs(num - target) / target


def matched_width(
    image_shape,
    target: int,
    levels: int = 2,
    steps_per_level: int = 2,
    tolerance: float = 0.10,
    max_width: int = 1024,
) -> tuple[int, int]:
    """``(width, num_params)`` of the uncompressed flow of :func:`build_flow` whose parameter
    count is closest to ``target`` (a bisection on the coupling width; the count grows with it).

    Raises a ValueError naming the counts when no width within ``[1, max_width]`` comes within
    ``tolerance`` of the target.
    """
    from flowjax_thesis.models.compressive.images import build_flow

    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ValueError(f"target must be a positive int (a parameter count), got {target!r}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")

    def count(width: int) -> int:
        flow = build_flow(
            image_shape, "none", None, steps_per_level=steps_per_level, levels=levels, width=width
        )
        return count_params(flow)

    lo, hi = 1, max_width
    if count(hi) < target:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda w: abs(count(w) - target))
    n = count(best)
    if capacity_gap(n, target) > tolerance:
        raise ValueError(
            f"no uncompressed flow with levels={levels}, steps_per_level={steps_per_level} and a "
            f"width in [1, {max_width}] has {target} parameters within {tolerance:.0%}: the "
            f"closest (width {best}) has {n}"
        )
    return best, n


__all__ = ["count_params", "capacity_gap", "matched_width"]
