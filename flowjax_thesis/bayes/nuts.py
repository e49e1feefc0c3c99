"""Reference posteriors: NUTS (NumPyro, the ``bayes`` extra) or exact draws.

:func:`nuts` runs NumPyro's NUTS on the *same* unconstrained log-density the variational families
see (through ``potential_fn``), so VI and MCMC target exactly one function.
:func:`reference_posterior` picks the best reference a model offers: exact draws when the model
has them (the funnel, the conjugate checks), NUTS in a better parameterisation when the model
names one (centered eight schools -> non-centered, mapped back), plain NUTS otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bayes.models import BayesModel

EXTRA_HINT = "pip install 'flowjax_thesis[bayes]'"


def require_numpyro():
    try:
        import numpyro
        from numpyro.infer import MCMC, NUTS
    except ImportError as err:
        raise ImportError(
            f"the NUTS reference uses NumPyro, which is not installed; install the bayes extra: "
            f"{EXTRA_HINT}"
        ) from err
    return numpyro, MCMC, NUTS


@dataclass
class Reference:
    """Reference draws ``(n, dim)`` in the model's unconstrained space and how they were made."""

    draws: np.ndarray
    method: str
    seconds: float  # wall time including compilation
    diagnostics: dict

    @property
    def mean(self) -> np.ndarray:
        return self.draws.mean(0)

    @property
    def sd(self) -> np.ndarray:
        return self.draws.std(0)


def nuts(
    model: BayesModel,
    key,
    *,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 2,
    target_accept: float = 0.8,
    chain_method: str = "vectorized",
) -> Reference:
    """NUTS on ``model.log_density``. Chains start at ``U(-1, 1)`` draws. Returns all draws
    (chains concatenated), wall time including compilation, divergences, split R-hat and bulk
    ESS (minimum over coordinates)."""
    _, MCMC, NUTS = require_numpyro()
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    k_init, k_run = jax.random.split(key)
    init = jax.random.uniform(k_init, (num_chains, model.dim), minval=-1.0, maxval=1.0)
    kernel = NUTS(potential_fn=lambda th: -model.log_density(th), target_accept_prob=target_accept)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    t0 = time.time()
    mcmc.run(k_run, init_params=init if num_chains > 1 else init[0], extra_fields=("diverging",))
    draws = mcmc.get_samples(group_by_chain=True)
    draws = np.asarray(jax.block_until_ready(draws))
    seconds = time.time() - t0
    if draws.ndim == 2:
        draws = draws[None]
    diverging = np.asarray(mcmc.get_extra_fields()["diverging"])
    diag = {
        "divergences": int(diverging.sum()),
        "max_rhat": float(np.max(split_gelman_rubin(draws))) if num_chains > 1 else float("nan"),
        "min_ess": float(np.min(effective_sample_size(draws))),
    }
    return Reference(draws.reshape(-1, model.dim), "nuts", seconds, diag)


def reference_posterior(model: BayesModel, key, **nuts_kwargs) -> Reference:
    """Exact draws if the model has them, else NUTS (in ``model.reference``'s parameterisation
    when given). ``nuts_kwargs`` go to :func:`nuts`; with exact draws ``num_samples *
    num_chains`` are drawn."""
    if model.sample_exact is not None:
        n = nuts_kwargs.get("num_samples", 1000) * nuts_kwargs.get("num_chains", 2)
        t0 = time.time()
        draws = np.asarray(jax.jit(model.sample_exact, static_argnums=1)(key, n))
        return Reference(draws, "exact", time.time() - t0, {})
    if model.reference is not None:
        other, to_self = model.reference
        ref = nuts(other, key, **nuts_kwargs)
        ref.draws = np.asarray(to_self(jnp.asarray(ref.draws)))
        ref.method = f"nuts ({other.name}, mapped)"
        return ref
    return nuts(model, key, **nuts_kwargs)
