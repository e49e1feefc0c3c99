"""One-call training of a flow: by variational inference or by maximum likelihood.

Both build a :func:`~flowjax_thesis.train.gradient_transition` and run :func:`fit`; they return
``(params, FitResult)``. Extra keyword arguments go to :func:`fit` (checkpoints, run, mesh, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
import optax

from flowjax_thesis.flows import Flow, as_float_array, check_finite, check_key
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
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    init_key, fit_key = jax.random.split(check_key(key))
    params = flow.init(init_key) if params is None else params
    check_target(flow, params, log_target, jax.random.fold_in(init_key, 1))
    optimizer = optimizer or optax.adam(6e-4)
    transition = gradient_transition(
        reverse_kl_loss(flow, log_target, num_samples, stick_the_landing), optimizer
    )
    result = fit(transition, transition.init(params), None, key=fit_key, steps=steps, **fit_kwargs)
    return result.state.params, result


def check_target(flow: Flow, params, log_target: Callable, key, n: int = 16) -> None:
    """A clear error unless ``log_target`` maps one event to a finite scalar at draws of the
    initial flow (checked once, on the host, before training)."""
    x = flow.sample(params, key, n)
    try:
        out = jax.vmap(log_target)(x)
    except Exception as err:
        raise ValueError(
            f"log_target failed on a batch of events of shape {flow.event_shape}: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if np.shape(out) != (n,):
        raise ValueError(
            "log_target must return a scalar per event (one event of shape "
            f"{flow.event_shape} in, a scalar out); it returned shape {np.shape(out)[1:]} per event"
        )
    if not np.all(np.isfinite(np.asarray(out))):
        raise ValueError(
            "log_target is not finite at draws of the initial flow "
            f"(values {np.asarray(out)[:4].tolist()}...): it must be finite wherever q puts mass"
        )


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
    data = check_finite(np.asarray(as_float_array(data, "data")), "data")
    if len(data) == 0:
        raise ValueError("the training data is empty (0 examples)")
    flow.check_inputs(data, context)  # shape check with a clear message
    if val_data is not None:
        val_data = check_finite(np.asarray(as_float_array(val_data, "val_data")), "val_data")
        flow.check_inputs(val_data, val_context)
    if context is not None:
        context = check_finite(np.asarray(as_float_array(context, "context")), "context")
    init_key, fit_key = jax.random.split(check_key(key))
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
