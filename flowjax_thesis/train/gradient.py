"""Gradient-based training as a :class:`~flowjax_thesis.train.transition.Transition`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import optax

from flowjax_thesis.train.transition import Transition


@flax.struct.dataclass
class TrainState:
    params: Any
    opt_state: Any


def gradient_transition(
    loss_fn: Callable[[Any, Any, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    has_aux: bool = False,
) -> Transition:
    """``step`` takes one optimizer step on ``loss_fn(params, batch, key)``.

    With ``has_aux`` the loss returns ``(loss, metrics_dict)`` and the metrics are reported too.
    Metrics always include ``loss`` and ``grad_norm``.
    """

    def init(params) -> TrainState:
        return TrainState(params=params, opt_state=optimizer.init(params))

    def step(state: TrainState, batch, key):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)
        value, grads = grad_fn(state.params, batch, key)
        loss, aux = value if has_aux else (value, {})
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        return TrainState(params=params, opt_state=opt_state), metrics

    return Transition(init, step)
