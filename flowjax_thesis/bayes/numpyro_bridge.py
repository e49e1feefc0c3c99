"""Any NumPyro model as a :class:`~flowjax_thesis.bayes.models.BayesModel`.

:func:`from_numpyro` turns a NumPyro model function (with its data bound through ``*args`` and
``**kwargs``) into the posterior on ``R^dim`` that every variational family of
:mod:`flowjax_thesis.bayes` fits. NumPyro does the work: ``initialize_model`` traces the model,
its ``potential_fn`` is the negative log posterior on the unconstrained space *with* the
log-Jacobians of NumPyro's own constraining bijectors (``biject_to(site.support)``), and its
``postprocess_fn`` maps unconstrained values back to the constrained latent and deterministic
sites. Nothing is re-derived by hand, so the density is exactly the one NumPyro's NUTS samples.

Flattening order (``theta`` of shape ``(dim,)``):

- latent sites in the order the model samples them (its trace order; observed, deterministic and
  ``param`` sites are not part of ``theta``);
- within a site (a plate or a vector/matrix site), its *unconstrained* value flattened in C
  (row-major) order; the unconstrained shape can differ from the constrained one (a simplex of
  ``K`` entries has ``K - 1`` unconstrained coordinates).

Coordinate names (``BayesModel.names``) are ``site`` for a scalar site and ``site[i]`` /
``site[i,j]`` otherwise, prefixed by the unconstraining map: ``log_`` for positive sites (NumPyro's
``ExpTransform``), ``logit_`` for unit-interval sites (``SigmoidTransform``), ``u_`` for any other
constrained support (e.g. ``u_w[0]`` for a simplex), none for real sites.
``BayesModel.data`` holds the model, its arguments, the observed values per site, the site table
(``sites``: name -> constrained shape, unconstrained shape, slice of ``theta``, transform name) and
``init``: NumPyro's ``init_to_median`` point in ``theta`` coordinates (where
``fit_family(..., loc=...)`` can start a family: posteriors far from the origin, e.g. heights
around 170, are then not a long walk away).
``BayesModel.unconstrain`` maps a dict of constrained site values back to ``theta`` (NumPyro's
``unconstrain_fn``), which is how :func:`reparameterized_reference` maps reference draws of an
equivalent model (e.g. non-centered eight schools) into this model's coordinates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bayes.models import BayesModel

EXTRA_HINT = "pip install 'flowjax_thesis[bayes]'"
_PREFIX = {"ExpTransform": "log_", "SigmoidTransform": "logit_"}


def _require_numpyro():
    try:
        import numpyro  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"from_numpyro needs NumPyro, which is not installed; install the bayes extra: "
            f"{EXTRA_HINT}"
        ) from err


def _coordinate_names(site: str, shape: tuple[int, ...], prefix: str) -> list[str]:
    if shape == ():
        return [f"{prefix}{site}"]
    return [f"{prefix}{site}[{','.join(str(i) for i in idx)}]" for idx in np.ndindex(*shape)]


def _latent_sites(model, args, kwargs) -> dict:
    """The model's trace (seeded with key 0) after validating that it can be fitted."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(model, jax.random.PRNGKey(0))).get_trace(*args, **kwargs)
    latent = {
        name: site
        for name, site in trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary", False)
    }
    discrete = [n for n, s in latent.items() if s["fn"].support.is_discrete]
    if discrete:
        raise ValueError(
            f"from_numpyro: model {getattr(model, '__name__', model)!r} has discrete latent "
            f"sites {discrete}; flows need a continuous posterior (marginalise them out, e.g. "
            "with a mixture distribution)"
        )
    if not latent:
        raise ValueError(
            f"from_numpyro: model {getattr(model, '__name__', model)!r} has no latent sample "
            "sites (nothing to infer: every sample site is observed)"
        )
    return trace


def from_numpyro(model: Callable, *args, **kwargs) -> BayesModel:
    """The posterior of the NumPyro ``model(*args, **kwargs)`` as a :class:`BayesModel`.

    ``log_density(theta)`` is ``-potential_fn`` of ``numpyro.infer.util.initialize_model`` on the
    unflattened ``theta`` (see the module docstring for the order and the names);
    ``constrain(theta)`` returns the constrained latent *and* deterministic sites by name.
    Discrete latent sites are rejected with a ValueError.
    """
    _require_numpyro()
    if not callable(model):
        raise TypeError(f"from_numpyro: model must be a NumPyro model function, got {model!r}")
    from numpyro.distributions.transforms import biject_to
    from numpyro.infer.initialization import init_to_median
    from numpyro.infer.util import initialize_model, unconstrain_fn

    name = getattr(model, "__name__", type(model).__name__)
    trace = _latent_sites(model, args, kwargs)
    info = initialize_model(
        jax.random.PRNGKey(0),
        model,
        model_args=args,
        model_kwargs=kwargs,
        init_strategy=init_to_median(num_samples=15),
        validate_grad=False,
    )
    z0 = info.param_info.z
    order = [n for n in trace if n in z0]  # trace order, only the unconstrained latent sites
    sites, names, start = {}, [], 0
    for site_name in order:
        u_shape = tuple(np.shape(z0[site_name]))
        size = math.prod(u_shape)
        t = biject_to(trace[site_name]["fn"].support)
        while hasattr(t, "base_transform"):  # IndependentTransform of a to_event site
            t = t.base_transform
        transform = type(t).__name__
        prefix = "" if transform == "IdentityTransform" else _PREFIX.get(transform, "u_")
        sites[site_name] = {
            "shape": tuple(np.shape(trace[site_name]["value"])),
            "unconstrained_shape": u_shape,
            "slice": (start, start + size),
            "transform": transform,
        }
        names += _coordinate_names(site_name, u_shape, prefix)
        start += size
    dim = start

    def unflatten(theta):
        return {
            n: jnp.reshape(theta[s["slice"][0] : s["slice"][1]], s["unconstrained_shape"])
            for n, s in sites.items()
        }

    def flatten(unconstrained: dict):
        return jnp.concatenate([jnp.reshape(unconstrained[n], (-1,)) for n in sites])

    potential_fn, postprocess_fn = info.potential_fn, info.postprocess_fn

    def log_density(theta):
        theta = jnp.asarray(theta)
        if theta.shape != (dim,):
            raise ValueError(
                f"{name}: log_density takes one unconstrained vector of shape ({dim},); vmap it "
                f"for a batch. Got shape {theta.shape}"
            )
        return -potential_fn(unflatten(theta))

    def constrain(theta):
        return postprocess_fn(unflatten(jnp.asarray(theta)))

    def unconstrain(values: dict):
        missing = [n for n in sites if n not in values]
        if missing:
            raise ValueError(
                f"{name}: unconstrain needs a value for every latent site; missing {missing}"
            )
        latent = {n: jnp.asarray(values[n]) for n in sites}
        return flatten(unconstrain_fn(model, args, kwargs, latent))

    observed = {
        n: np.asarray(s["value"])
        for n, s in trace.items()
        if s["type"] == "sample" and s["is_observed"]
    }
    data = {
        "numpyro_model": model,
        "args": args,
        "kwargs": kwargs,
        "observed": observed,
        "sites": sites,
        "flatten": flatten,
        "unflatten": unflatten,
        "init": np.asarray(flatten(z0)),  # NumPyro's init_to_median point, unconstrained
    }
    return BayesModel(
        name, dim, tuple(names), log_density, constrain, data=data, unconstrain=unconstrain
    )


def reparameterized_reference(model: BayesModel, other: BayesModel) -> BayesModel:
    """``model`` with ``reference = (other, to_model)``: NUTS runs on ``other`` (the same
    posterior in a parameterisation that samples better, e.g. non-centered eight schools for the
    centered one) and its draws are mapped through ``other.constrain`` then
    ``model.unconstrain``. Both models need the same latent site names (``other`` may have them
    as deterministic sites)."""
    if model.unconstrain is None:
        raise ValueError(f"{model.name} has no unconstrain (build it with from_numpyro)")
    needed = list(model.data["sites"])

    def to_model(draws):
        def one(theta):
            values = other.constrain(theta)
            missing = [n for n in needed if n not in values]
            if missing:
                raise ValueError(
                    f"reference model {other.name} does not provide sites {missing} of {model.name}"
                )
            return model.unconstrain({n: values[n] for n in needed})

        return jax.jit(jax.vmap(one))(jnp.asarray(draws))

    return dataclasses.replace(model, reference=(other, to_model))
