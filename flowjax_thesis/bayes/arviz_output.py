"""ArviZ output: variational (or reference) draws as an ``arviz.InferenceData``.

:func:`to_inference_data` draws from a fitted family, maps every draw through
``model.constrain`` and returns the constrained sites (latent and deterministic, by name) in the
``posterior`` group, so ArviZ's summaries and plots (``az.summary``, ``az.plot_forest``,
``az.plot_pair``...) work on a flow fit as on MCMC output. ``sample_stats`` holds the raw
importance log-weights ``log p~(x) - log q(x)`` of the draws (``log_weight``); ``attrs`` the
family, PSIS ``k-hat`` and whether the draws were reweighted. With ``psis=True`` the posterior
draws are a systematic resample of the ``q`` draws with the PSIS-smoothed weights, so every
ArviZ summary is the PSIS-corrected estimate (duplicated draws: do not read ArviZ's MCMC ESS of a
resampled posterior as an effective sample size; the PSIS one is ``attrs["ess"]``).
:func:`reference_inference_data` does the same for reference draws (NUTS chains kept apart).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bayes import diagnostics
from flowjax_thesis.bayes.models import BayesModel
from flowjax_thesis.bayes.vi import Fitted, draws_and_log_weights


def constrained_draws(model: BayesModel, draws) -> dict[str, np.ndarray]:
    """``model.constrain`` over the rows of ``draws`` (``(n, dim)``): site -> ``(n, *shape)``."""
    draws = jnp.asarray(draws)
    if draws.ndim != 2 or draws.shape[1] != model.dim:
        raise ValueError(f"draws must have shape (n, {model.dim}), got {draws.shape}")
    out = jax.jit(jax.vmap(model.constrain))(draws)
    return {k: np.asarray(v) for k, v in out.items()}


def systematic_resample(key, log_weights, n: int) -> np.ndarray:
    """``n`` indices drawn by systematic resampling with probabilities ``softmax(log_weights)``."""
    lw = np.asarray(log_weights, np.float64)
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    w = np.exp(lw - lw.max())
    cdf = np.cumsum(w / w.sum())
    u = (float(jax.random.uniform(key)) + np.arange(n)) / n
    return np.minimum(np.searchsorted(cdf, u), len(lw) - 1)


def _observed(model: BayesModel) -> dict:
    return {k: np.asarray(v) for k, v in model.data.get("observed", {}).items()}


def _inference_data(posterior: dict, sample_stats: dict, model: BayesModel, attrs: dict):
    az = diagnostics.require_arviz()
    observed = _observed(model)
    return az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats or None,
        observed_data=observed or None,
        attrs={"model": model.name, **attrs},
    )


def to_inference_data(
    fitted: Fitted, model: BayesModel, num_samples: int = 4000, psis: bool = False, *, key=None
):
    """``num_samples`` draws of ``fitted`` as an ``arviz.InferenceData`` (one chain; see the
    module docstring). ``key`` defaults to ``PRNGKey(0)``."""
    if num_samples < 10:
        raise ValueError(f"num_samples must be >= 10 (PSIS needs a tail), got {num_samples}")
    key = jax.random.PRNGKey(0) if key is None else key
    k_draw, k_resample = jax.random.split(key)
    x, lw = draws_and_log_weights(
        fitted.flow, fitted.params, model.log_density, k_draw, num_samples
    )
    smoothed, khat = diagnostics.psis(lw)
    if psis:
        x = x[systematic_resample(k_resample, smoothed, num_samples)]
    posterior = {k: v[None] for k, v in constrained_draws(model, x).items()}
    attrs = {
        "inference": f"variational ({fitted.family})",
        "family": fitted.family,
        "khat": float(khat),
        "ess": diagnostics.ess_of_weights(smoothed),
        "psis_resampled": int(bool(psis)),
    }
    stats = {} if psis else {"log_weight": lw[None]}
    return _inference_data(posterior, stats, model, attrs)


def draws_to_inference_data(model: BayesModel, draws, num_chains: int = 1, attrs=None):
    """Unconstrained ``draws`` (``(n, dim)``, chains concatenated) as an ``arviz.InferenceData``
    of constrained sites with ``num_chains`` chains."""
    draws = np.asarray(draws)
    if num_chains < 1 or len(draws) % num_chains:
        raise ValueError(f"{len(draws)} draws do not split into num_chains={num_chains} chains")
    values = constrained_draws(model, draws)
    posterior = {
        k: v.reshape((num_chains, len(draws) // num_chains) + v.shape[1:])
        for k, v in values.items()
    }
    return _inference_data(posterior, {}, model, dict(attrs or {}))


def reference_inference_data(reference, model: BayesModel, num_chains: int = 1):
    """Reference draws (a :class:`~flowjax_thesis.bayes.nuts.Reference`, chains concatenated) as
    an ``arviz.InferenceData`` with ``num_chains`` chains."""
    return draws_to_inference_data(
        model, reference.draws, num_chains, {"inference": reference.method}
    )
