"""Flows that mix bijective layers and compressive steps, and their objectives.

A :class:`CompressiveFlow` is a sequence of *stages*, listed nearest the data first (as in
``distrax.Chain`` and :class:`~flowjax_thesis.flows.Flow`): each stage is a foundation
:class:`~flowjax_thesis.bijectors.Layer` (bijective, exact log-determinant) or a
:class:`~flowjax_thesis.models.compressive.steps.CompressiveStep`. The base is ``N(0, I)`` of the
last stage's base shape.

In the density direction, :meth:`CompressiveFlow.log_prob_terms` returns the total and its terms
by name; :meth:`CompressiveFlow.term_kinds` says for each term whether it is ``"exact"`` or a
``"bound"``:

- a bijective stage adds ``log|det d g^{-1}/dx|`` (exact);
- a compressive step that is the **last** stage adds ``log p(z')`` with ``z ~ N(0, I_d)``
  integrated out: exact for PPCA and the linear VAE (eq. 5.5), an ELBO / importance-weighted bound
  for a nonlinear VAE (eq. 5.14); the base term is then included in it;
- a compressive step **followed by more stages** samples ``z ~ q(z | z')`` and adds
  ``V = log p(z'|z) - log q(z|z')`` (eq. 5.13): a bound in general (the base of the step is
  whatever the later stages model, not ``N(0, I)``);
- otherwise the last term is the base ``log N(z; 0, I)`` (exact).

``train=True`` uses each step's training ``objective`` (the closed-form ELBO for the linear VAE,
which is a bound; the closed-form-KL ELBO for VAEs) instead of ``log_marginal``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.bijectors import Layer
from flowjax_thesis.models.compressive.steps import CompressiveStep, std_normal_log_prob


def _flatten_event(x, ndims: int):
    return x.reshape(x.shape[: x.ndim - ndims] + (-1,))


@dataclass(frozen=True)
class CompressiveFlow:
    stages: tuple
    event_shape: tuple[int, ...]

    def __post_init__(self):
        stages = tuple(self.stages)
        if not stages:
            raise ValueError("a CompressiveFlow needs at least one stage")
        for s in stages:
            if not isinstance(s, (Layer, CompressiveStep)):
                raise TypeError(f"stages must be Layers or CompressiveSteps, got {s!r}")
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "event_shape", tuple(int(s) for s in self.event_shape))
        _ = self.shapes  # validates the shapes through every stage

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Data-side shape of every stage, then the base shape."""
        shapes = [self.event_shape]
        for s in self.stages:
            shapes.append(tuple(s.base_shape(shapes[-1])))
        return shapes

    @property
    def base_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    @property
    def latent_size(self) -> int:
        return math.prod(self.base_shape)

    @property
    def compression(self) -> float:
        """Fraction of dimensions removed: ``1 - d / D``."""
        return 1.0 - self.latent_size / math.prod(self.event_shape)

    def init(self, key):
        keys = jax.random.split(key, len(self.stages))
        shapes = self.shapes
        return tuple(
            s.init(k, shp) for s, k, shp in zip(self.stages, keys, shapes[:-1], strict=False)
        )

    def data_init(self, params, x, key=None):
        """ActNorm initialisation and closed-form PPCA initialisation from a batch ``x``; a
        compressive step passes a draw ``z ~ q(z | z')`` on (not its mean, which is constant at
        initialisation and would give a later ActNorm a zero scale)."""
        key = jax.random.PRNGKey(0) if key is None else key
        new = []
        h = jnp.asarray(x)
        for i, (s, p) in enumerate(zip(self.stages, params, strict=True)):
            p = s.data_init(p, h)
            if isinstance(s, Layer):
                h = s.bind(p).inverse(h)
            else:
                h = s.encode(p, h, jax.random.fold_in(key, i))[0]
            new.append(p)
        return tuple(new)

    # -- density ------------------------------------------------------------------------------
    def _check(self, x):
        x = jnp.asarray(x)
        k = len(self.event_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k :]) != self.event_shape:
            raise ValueError(
                f"expected data of shape (..., {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return x

    def term_kinds(self, train: bool = False) -> dict[str, str]:
        kinds = {}
        last = len(self.stages) - 1
        for i, s in enumerate(self.stages):
            name = self._term_name(i, s)
            if isinstance(s, Layer):
                kinds[name] = "exact"
            elif i == last:
                exact = s.exact and not (train and s.kind == "linear_vae")
                kinds[name] = "exact" if exact else "bound"
            else:
                kinds[name] = "bound"
        if not isinstance(self.stages[-1], CompressiveStep):
            kinds["base"] = "exact"
        return kinds

    @property
    def exact(self) -> bool:
        """Whether :meth:`log_prob` is an exact log-density (no bound terms)."""
        return all(k == "exact" for k in self.term_kinds().values())

    @staticmethod
    def _term_name(i, stage) -> str:
        if isinstance(stage, Layer):
            return f"{i}:{type(stage).__name__}:log_det"
        return f"{i}:{stage.kind}"

    def log_prob_terms(self, params, x, key=None, num_samples: int = 1, train: bool = False):
        """``(total, terms)`` for ``x`` of shape ``batch + event_shape`` (see module doc).

        ``key`` is needed when a stochastic step is present.
        """
        h = self._check(x)
        batch = h.shape[: h.ndim - len(self.event_shape)]
        terms = {}
        last = len(self.stages) - 1
        for i, (s, p) in enumerate(zip(self.stages, params, strict=True)):
            name = self._term_name(i, s)
            if isinstance(s, Layer):
                h, ld = s.bind(p).inverse_and_log_det(h)
                terms[name] = ld
                continue
            sub = None if key is None else jax.random.fold_in(key, i)
            if sub is None and (i != last or not s.exact):
                raise ValueError(
                    f"stage {i} ({s.kind}) samples z ~ q(z | z'): pass a PRNG key to log_prob"
                )
            if i == last:
                if train:
                    terms[name] = s.objective(p, h, sub)
                else:
                    terms[name] = s.log_marginal(p, h, sub, num_samples)
            else:
                h, v = s.encode(p, h, sub)
                terms[name] = v
        if not isinstance(self.stages[-1], CompressiveStep):
            terms["base"] = std_normal_log_prob(_flatten_event(h, len(self.base_shape)))
        terms = {k: jnp.broadcast_to(v, batch) for k, v in terms.items()}
        total = sum(terms.values())
        return total, terms

    def log_prob(self, params, x, key=None, num_samples: int = 1):
        return self.log_prob_terms(params, x, key, num_samples)[0]

    def compressive_input(self, params, x):
        """``z'``: the input of the last stage (a compressive step) and the log-determinant of
        the bijective stages before it (they must all be bijective); for eq. 5.6."""
        h = self._check(x)
        batch = h.shape[: h.ndim - len(self.event_shape)]
        total = jnp.zeros(batch)
        for s, p in zip(self.stages[:-1], params[:-1], strict=True):
            if not isinstance(s, Layer):
                raise ValueError("the dual-base objective needs bijective stages then one step")
            h, ld = s.bind(p).inverse_and_log_det(h)
            total = total + ld
        return h, total

    # -- sampling -----------------------------------------------------------------------------
    def sample(self, params, key, n: int, temperature: float = 1.0, noise: bool = True):
        """``n`` samples: ``z ~ N(0, T^2 I)``, decoders sample ``z' ~ p(z'|z)`` (their mean if
        ``noise`` is False), bijective stages map forward."""
        key, k0 = jax.random.split(key)
        h = temperature * jax.random.normal(k0, (n,) + self.base_shape)
        for i in range(len(self.stages) - 1, -1, -1):
            s, p = self.stages[i], params[i]
            if isinstance(s, Layer):
                h = s.bind(p).forward(h)
            else:
                k = jax.random.fold_in(key, i) if noise else None
                h = s.decode(p, h, k, temperature)
        return h


def num_params(params) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def alpha_schedule(step, anneal_steps: int):
    """Linear annealing of the dual-base weight from 0 to 1 over ``anneal_steps`` steps."""
    if anneal_steps <= 0:
        return jnp.ones((), jnp.float32)
    return jnp.clip(jnp.asarray(step, jnp.float32) / anneal_steps, 0.0, 1.0)


def dual_base_log_prob(flow: CompressiveFlow, params, x, alpha):
    """Eq. 5.6, the dual-base objective (per example):
    ``log N(z'; 0, I_D) + log|det J| + alpha * log N(z'; mu, A A^T + sigma^2 I)``.

    The extracted eq. 5.6 prints the first term with the PPCA covariance; the text says it is a
    *new* high-dimensional base that Gaussianises the input of the compressive step, i.e. the
    bijective flow's usual ``N(0, I_D)``. With ``alpha = 0`` this is the plain bijective flow.
    It is an objective, not a normalised density; report :meth:`CompressiveFlow.log_prob`.
    """
    zp, log_det = flow.compressive_input(params, x)
    step = flow.stages[-1]
    high = std_normal_log_prob(_flatten_event(zp, zp.ndim - log_det.ndim))
    low = step.log_marginal(params[-1], zp, None)
    return high + log_det + alpha * low, {"high_base": high, "log_det": log_det, "ppca": low}
