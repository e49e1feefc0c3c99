"""NumPyro's own SVI autoguides on a model made by :func:`~flowjax_thesis.bayes.from_numpyro`,
assessed exactly like our families (the side-by-side of issue 16).

:func:`fit_autoguide` runs ``numpyro.infer.SVI`` with ``Trace_ELBO(num_particles)`` (vectorised
particles) and the same optimiser as :func:`~flowjax_thesis.bayes.fit_family` (Adam with a cosine
decay to 5% of ``lr``), so ``steps * num_particles`` target evaluations match ours.
:func:`autoguide_draws_and_log_weights` draws from the fitted guide's posterior on NumPyro's
flattened unconstrained latent, keeps its ``log q`` (with the flow's intermediates for IAF and
BNAF, whose transforms have no inverse), and reorders the draws into the ``BayesModel``'s
coordinates (a permutation: ``log q`` is unchanged), so the importance log-weights are computed
against the very same ``log_density``. Then :func:`~flowjax_thesis.bayes.vi.assess_draws` gives
k-hat and moment errors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import numpy as np
import optax

from flowjax_thesis.bayes.models import BayesModel

AUTOGUIDES = ("AutoDiagonalNormal", "AutoMultivariateNormal", "AutoIAFNormal", "AutoBNAFNormal")
#: the guides' settings in the issue's measurement (IAF: 4 flows, hidden 32x32; NumPyro's
#: autoregressive networks need hidden widths >= dim, so IAF's are ``max(32, dim)``)
DEFAULT_KWARGS = {
    "AutoIAFNormal": {"num_flows": 4, "hidden_dims": [32, 32]},
    "AutoBNAFNormal": {"num_flows": 1, "hidden_factors": [8, 8]},
}


def _guide_kwargs(guide: str, dim: int, given: dict | None) -> dict:
    kwargs = {**DEFAULT_KWARGS.get(guide, {}), **(given or {})}
    if guide == "AutoIAFNormal" and not (given and "hidden_dims" in given):
        kwargs["hidden_dims"] = [max(h, dim) for h in kwargs["hidden_dims"]]
    return kwargs


@dataclass
class GuideFit:
    family: str
    guide: object
    params: dict
    seconds: float  # SVI wall time including compilation
    losses: np.ndarray


def _numpyro_parts(model: BayesModel):
    if "numpyro_model" not in model.data:
        raise ValueError(
            f"{model.name} is not a NumPyro model; build it with flowjax_thesis.bayes.from_numpyro"
        )
    d = model.data
    return d["numpyro_model"], d["args"], d["kwargs"]


def fit_autoguide(
    model: BayesModel,
    guide: str,
    *,
    key,
    steps: int,
    num_particles: int = 16,
    lr: float = 1e-2,
    guide_kwargs: dict | None = None,
) -> GuideFit:
    """Fits NumPyro's ``guide`` (a name in :data:`AUTOGUIDES`) by SVI (see the module docstring)."""
    from numpyro.infer import SVI, Trace_ELBO, autoguide
    from numpyro.optim import optax_to_numpyro

    if guide not in AUTOGUIDES:
        raise KeyError(f"unknown autoguide {guide!r}; available: {', '.join(AUTOGUIDES)}")
    fn, args, kwargs = _numpyro_parts(model)
    g = getattr(autoguide, guide)(fn, **_guide_kwargs(guide, model.dim, guide_kwargs))
    optimizer = optax_to_numpyro(optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05)))
    svi = SVI(fn, g, optimizer, Trace_ELBO(num_particles=num_particles, vectorize_particles=True))
    t0 = time.time()
    result = svi.run(key, steps, *args, progress_bar=False, **kwargs)
    params = jax.block_until_ready(result.params)
    return GuideFit(guide, g, params, time.time() - t0, np.asarray(result.losses))


def autoguide_draws_and_log_weights(fit: GuideFit, model: BayesModel, key, num_samples: int):
    """``num_samples`` draws of the fitted guide in ``model``'s coordinates and their log-weights
    ``log p~(x) - log q(x)``."""
    from numpyro import handlers
    from numpyro.distributions import TransformedDistribution

    guide, flatten = fit.guide, model.data["flatten"]
    posterior = handlers.substitute(guide._get_posterior, fit.params)()

    @jax.jit
    def run(key):
        if isinstance(posterior, TransformedDistribution):
            z, inter = posterior.sample_with_intermediates(key, (num_samples,))
            log_q = posterior.log_prob(z, inter)
        else:
            z = posterior.sample(key, (num_samples,))
            log_q = posterior.log_prob(z)
        log_q = log_q.reshape(num_samples, -1).sum(1)  # AutoDiagonalNormal: no to_event
        theta = jax.vmap(lambda v: flatten(guide._unpack_latent(v)))(z)
        return theta, jax.vmap(model.log_density)(theta) - log_q

    x, lw = run(key)
    return np.asarray(x, np.float64), np.asarray(lw, np.float64)
