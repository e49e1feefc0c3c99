"""One-call training of a flow: by variational inference or by maximum likelihood.

Both build a :func:`~flowjax_thesis.train.gradient_transition` and run :func:`fit`; they return
``(params, FitResult)``. Extra keyword arguments go to :func:`fit` (checkpoints, run, mesh, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import optax

from flowjax_thesis.flows import Flow, check_finite
from flowjax_thesis.objectives import max_likelihood_loss, nll, reverse_kl_loss
from flowjax_thesis.train.fit import FitResult, fit
from flowjax_thesis.train.gradient import gradient_transition


def fit_vi(
    flow: Flow,
    log_target: Callable,
    *,
    key,
    steps: int,
    num_samples: int = 128,
    optimizer: optax.GradientTransformation | None = None,
    params=None,
    stick_the_landing: bool = False,
    **fit_kwargs,
) -> tuple[object, FitResult]:
    """Maximises the ELBO of ``flow`` against the unnormalised ``log_target`` (one event in,
    a scalar out). ``num_samples`` draws per step; Adam(6e-4) by default, as in the blog."""
    init_key, fit_key = jax.random.split(key)
    params = flow.init(init_key) if params is None else params
    optimizer = optimizer or optax.adam(6e-4)
    transition = gradient_transition(
        reverse_kl_loss(flow, log_target, num_samples, stick_the_landing), optimizer
    )
    result = fit(transition, transition.init(params), None, key=fit_key, steps=steps, **fit_kwargs)
    return result.state.params, result


def fit_ml(
    flow: Flow,
    data,
    *,
    key,
    steps: int,
    batch_size: int = 512,
    optimizer: optax.GradientTransformation | None = None,
    params=None,
    context=None,
    val_data=None,
    val_context=None,
    eval_every: int | None = None,
    patience: int | None = None,
    data_init: bool = True,
    **fit_kwargs,
) -> tuple[object, FitResult]:
    """Maximum-likelihood training of ``flow`` on ``data`` (``(N,) + event_shape``).

    Data are checked for shape and finiteness first. With ``val_data`` the validation NLL is
    reported as ``val_loss`` every ``eval_every`` steps, and ``patience`` enables early stopping.
    ActNorm layers (if any) are initialised from a batch when ``data_init``.
    """
    data = check_finite(data, "data")
    flow.check_inputs(data, context)  # shape check with a clear message
    if val_data is not None:
        val_data = check_finite(val_data, "val_data")
        flow.check_inputs(val_data, val_context)
    init_key, fit_key = jax.random.split(key)
    if params is None:
        params = flow.init(init_key)
        if data_init:
            n = min(len(data), 1024)
            params = flow.data_init(params, data[:n], None if context is None else context[:n])
    optimizer = optimizer or optax.adam(1e-3)
    transition = gradient_transition(max_likelihood_loss(flow), optimizer)
    train = data if context is None else (data, np.asarray(context))
    eval_fn = None
    if val_data is not None:
        val_nll = jax.jit(lambda p: nll(flow, p, val_data, val_context))
        eval_fn = lambda state: {"val_loss": val_nll(state.params)}
        eval_every = eval_every or max(steps // 20, 1)
    result = fit(
        transition,
        transition.init(params),
        train,
        key=fit_key,
        steps=steps,
        batch_size=batch_size,
        eval_fn=eval_fn,
        eval_every=eval_every,
        patience=patience,
        **fit_kwargs,
    )
    return result.state.params, result
