"""The shape every training algorithm takes: an optax-like pair of pure functions.

``init(...) -> state`` builds the state pytree; ``step(state, batch, key) -> (state, metrics)`` is
jittable and has no side effects. Gradient steps, boosting weight updates, PPCA closed-form
updates and CVI natural-parameter updates all have this shape, so the same :func:`fit` loop
drives all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex

State = Any
Batch = Any
Metrics = dict[str, chex.Array]


class Transition(NamedTuple):
    init: Callable[..., State]
    step: Callable[[State, Batch, chex.PRNGKey], tuple[State, Metrics]]
    # what :func:`fit`'s divergence message tells the user to try, in this algorithm's terms
    divergence_hint: str = "try a smaller learning rate"
