"""Gradient boosted normalizing flows (GBNF; thesis chapter 4 and appendix B).

A :class:`GBNF` is ``C`` components, each a flow of one family sharing the standard-normal base.
The components' parameters are stacked along a leading axis and evaluated with ``vmap``; no
Python loop over components runs on the hot path. Params are a dict::

    components   the stacked component params (leading axis C)
    log_weights  (C,) mixture log-weights (additive boosting; normalised over active components)
    exponents    (C,) exponents rho_j of the multiplicative model (the first one is 1)
    active       (C,) bool, which components have been trained (the others are ignored)
    log_z        ()   log partition function Gamma of the multiplicative model (0 for additive)

Additive boosting (eq. 4.4 with psi(a) = a)::

    G_c(x) = (1 - rho_c) G_{c-1}(x) + rho_c g_c(x),   log G = logsumexp_j(log w_j + log g_j(x))

so after ``c`` stages ``w_j = rho_j prod_{k > j} (1 - rho_k)`` (``rho_1 = 1``): the weights stay
in [0, 1] and sum to 1. Multiplicative boosting (eq. 4.10)::

    log G_c(x) = sum_j rho_j log g_j(x) - log Gamma_c,   Gamma_c = int prod_j g_j(x)^rho_j dx

with ``Gamma_c`` estimated by importance sampling from the equal-weight mixture of the trained
components (it is not available in closed form; :meth:`GBNF.estimate_log_z`). Sampling from the
multiplicative model uses sampling-importance-resampling from the same proposal, so its samples
are approximate while its ``log_prob`` is exact up to the ``Gamma`` estimate.

Training (section 4.3, Algorithm 1, appendix B):

- density estimation (:func:`fit_density`): component 1 is a plain maximum-likelihood flow; each
  further component ``g_c`` is fitted to the functional gradient ``1/G_{c-1}`` of the mixture NLL
  (eqs. 4.6-4.8). ``reweight="boosted"`` (default) minimises the mixture NLL (4.6) itself as a
  function of the new component, ``-mean log((1 - rho) G_{c-1}(x) + rho g(x))`` with ``rho`` the
  component's entry weight ``1/c`` (or, when fine-tuning, its current weight): its gradient is
  the likelihood gradient weighted by ``rho g(x) / G_c(x)``, i.e. the ``1/G_{c-1}`` weights of
  (4.8) self-normalised by the current mixture, which keeps them bounded and lets the new
  component specialise on the data the others explain badly. ``reweight="resample"`` is the
  original code's surrogate (4.13): each minibatch drawn again with replacement with
  probabilities ``softmax(-log G_{c-1}(x))``, clipped and renormalised as the original does
  (when the largest exceeds ``clip[1] = 0.1`` all are clipped to ``[0.01, 0.1]``; ``clip=None``
  keeps the raw ``1/G`` weights); ``reweight="importance"`` weights the minibatch
  log-likelihoods by the same probabilities. (With a mode-covering first component ``1/G`` is
  nearly flat on the data, so the surrogate re-learns the first component and later ``rho`` go
  to 0; see ``notes/issue3.md`` for the measurements.) Then the weight ``rho_c`` is fitted on
  held-out data by line search on the mixture NLL (convex in ``rho`` for the additive model) or
  by SGD on ``rho`` with a decaying step and clipping to [0, 1] as in Algorithm 1. Optional
  fine-tuning passes retrain each component against the mixture of all the others (with the
  boosted objective: coordinate descent on the mixture NLL) and refit its weight.
- variational inference (:func:`fit_vi`): the new component minimises (eq. 4.20/4.21)
  ``E_g[max(log G_{c-1}(z), floor) - log p~(z) + lambda log g(z)]``; ``log G_{c-1}`` is clamped
  from below at ``floor = -10`` exactly as the original code's ``G_MAX_LOSS`` does (it caps the
  reward for putting samples where the fixed components have no mass). Evaluating ``G_{c-1}`` at
  samples of ``g_c`` needs the inverse of every fixed component; families without one are
  rejected. ``rho_c`` by Algorithm 1 (SGD, default) or line search on the ELBO with fixed samples.
- conditional GBNF (appendix B): components are conditional flows ``g(y | x)``; every function
  takes a ``context`` and the additive training is unchanged (multiplicative boosting would need a
  context-dependent ``Gamma(x)`` and is rejected).

Each stage is a :class:`~flowjax_thesis.train.Transition` whose state carries the index of the
component being trained, so one compiled chunk of steps serves every stage. Frozen components are
masked out of the gradient: the trained component is read with a dynamic index from the stacked
params (its gradient is scattered back into row ``c`` only), everything else goes through
``stop_gradient``, and the optimizer's updates are multiplied by ``one_hot(c)`` as well.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax_thesis.bijectors import Chain, Repeat, make_layer
from flowjax_thesis.flows import Flow, check_finite, realnvp_flow
from flowjax_thesis.train.fit import DivergenceError, make_chunk_runner
from flowjax_thesis.train.transition import Transition

BOOSTING = ("additive", "multiplicative")
COMPONENT_MAPS = ("vmap", "scan")
REWEIGHT = ("boosted", "resample", "importance", "none")
RHO_METHODS = ("line_search", "sgd")
_TINY = 1e-30

# -- component families -----------------------------------------------------------------------

FAMILIES = (
    "realnvp",
    "realnvp_actnorm",
    "glow",
    "planar",
    "radial",
    "sylvester_orthogonal",
    "sylvester_householder",
    "sylvester_triangular",
    "maf",
    "iaf",
    "spline",
)


def component_flow(
    family: str,
    dim: int,
    num_layers: int,
    hidden: Sequence[int] = (64,),
    activation: str = "tanh",
    context_shape: tuple[int, ...] | None = None,
) -> Flow:
    """A ``num_layers``-step flow of ``family`` on vectors of size ``dim`` (one GBNF component).

    ``realnvp``: affine couplings alternating halves (the thesis's components);
    ``realnvp_actnorm``: the same after a (data-initialised) ActNorm, so that even a 1-step
    component can place and scale both coordinates (a 1-step coupling alone leaves the
    conditioning half standard normal); ``glow``: steps of
    ActNorm, an invertible linear map (1x1 convolution on vectors) and an affine coupling;
    ``planar``/``radial``/``sylvester_*``: ``num_layers`` copies of that layer; ``maf``/``iaf``:
    autoregressive layers with reversals in between; ``spline``: rational-quadratic couplings.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    hidden = tuple(int(h) for h in hidden)
    if family == "realnvp":
        return realnvp_flow(dim, num_layers, hidden, activation, context_shape)
    if family == "realnvp_actnorm":
        base = realnvp_flow(dim, num_layers, hidden, activation, context_shape)
        return Flow((make_layer("actnorm"),) + base.layers, (dim,), context_shape)
    if family == "spline":
        return realnvp_flow(dim, num_layers, hidden, activation, context_shape, transform="spline")
    if family == "glow":
        step = Chain(
            (
                make_layer("actnorm"),
                make_layer("conv1x1"),
                make_layer("affine_coupling", hidden=hidden, activation=activation),
            )
        )
        return Flow((Repeat(step, num_layers),), (dim,), context_shape)
    if family in ("maf", "iaf"):
        step = Chain((make_layer(family, hidden=hidden), make_layer("reverse")))
        return Flow((Repeat(step, num_layers),), (dim,), context_shape)
    if family in ("planar", "radial") or family.startswith("sylvester_"):
        if context_shape is not None:
            raise ValueError(f"{family} layers are unconditional; use realnvp/glow/maf/iaf")
        return Flow((Repeat(make_layer(family), num_layers),), (dim,))
    raise ValueError(f"unknown component family {family!r}; choose one of {FAMILIES}")


def num_parameters(tree) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def _take(tree, i):
    """Row ``i`` (may be traced) of every leaf of a stacked pytree."""
    return jax.tree.map(lambda p: p[i], tree)


def _safe_log(w):
    return jnp.log(jnp.maximum(w, _TINY))


def _logmeanexp(a, axis=None):
    n = a.shape[axis] if axis is not None else a.size
    return jax.nn.logsumexp(a, axis=axis) - math.log(n)


# -- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GBNF:
    """``num_components`` copies of the component ``flow`` combined by ``boosting``.

    ``component_map`` says how the stacked components are evaluated inside one jitted call:
    ``"vmap"`` (default) batches them with ``vmap``; sampling then pushes the whole batch
    through every component and keeps the chosen rows. ``"scan"`` runs a ``lax.map`` (a scan)
    over components for densities, and for sampling sorts the draws by component and pushes
    each chunk of ``sample_chunk`` rows through its own component only (about ``n + C *
    sample_chunk`` rows of work instead of ``C * n``). On CPU the scan is the faster of the two
    (``benchmarks/bench_gbnf.py``; vmap's C-fold wider intermediates hurt the cache); vmap
    stays the default for accelerators and for callers that vmap the model themselves.
    """

    flow: Flow
    num_components: int
    boosting: str = "additive"
    alternate: bool = False
    component_map: str = "vmap"
    sample_chunk: int = 128

    def __post_init__(self):
        if not isinstance(self.flow, Flow):
            raise TypeError(f"flow must be a Flow, got {type(self.flow).__name__}")
        if isinstance(self.num_components, bool) or int(self.num_components) != self.num_components:
            raise TypeError(f"num_components must be an integer, got {self.num_components!r}")
        if self.num_components < 1:
            raise ValueError(
                f"a GBNF needs at least one component (C >= 1), got C={self.num_components}"
            )
        if self.component_map not in COMPONENT_MAPS:
            raise ValueError(
                f"component_map must be one of {COMPONENT_MAPS}, got {self.component_map!r}"
            )
        if self.sample_chunk < 1:
            raise ValueError(f"sample_chunk must be >= 1, got {self.sample_chunk}")
        if self.boosting not in BOOSTING:
            raise ValueError(f"boosting must be one of {BOOSTING}, got {self.boosting!r}")
        if self.alternate and len(self.flow.event_shape) != 1:
            raise ValueError("alternate=True reverses vector coordinates; it needs (D,) events")
        if self.boosting == "multiplicative" and self.flow.conditional:
            raise ValueError(
                "multiplicative boosting of conditional flows needs a partition function per "
                "context; conditional GBNF supports additive boosting only (appendix B)"
            )

    @property
    def event_shape(self):
        return self.flow.event_shape

    @property
    def conditional(self) -> bool:
        return self.flow.conditional

    # -- params -------------------------------------------------------------------------------
    def init(self, key) -> dict:
        keys = jax.random.split(key, self.num_components)
        c = self.num_components
        return {
            "components": jax.vmap(self.flow.init)(keys),
            "log_weights": jnp.zeros((c,)),
            "exponents": jnp.zeros((c,)),
            "active": jnp.zeros((c,), bool),
            "log_z": jnp.zeros(()),
        }

    def component(self, params, i):
        """Params of component ``i`` alone (usable with ``self.flow``)."""
        return _take(params["components"], i)

    def num_active(self, params) -> int:
        return int(np.sum(np.asarray(params["active"])))

    def weights(self, params) -> np.ndarray:
        """Mixture weights (additive) or exponents (multiplicative); 0 for untrained components."""
        active = np.asarray(params["active"])
        if self.boosting == "multiplicative":
            return np.where(active, np.asarray(params["exponents"]), 0.0)
        lw = np.where(active, np.asarray(params["log_weights"], np.float64), -np.inf)
        if not active.any():
            return np.zeros(self.num_components)
        return np.exp(lw - np.logaddexp.reduce(lw[active]))

    def grow(self, params, key, extra: int = 1) -> tuple[GBNF, dict]:
        """Adds ``extra`` untrained components (to boost further after training is done)."""
        if extra < 1:
            raise ValueError(f"extra must be >= 1, got {extra}")
        bigger = dataclasses.replace(self, num_components=self.num_components + extra)
        new = jax.vmap(self.flow.init)(jax.random.split(key, extra))
        cat = lambda a, b: jnp.concatenate([a, b], 0)
        out = {
            "components": jax.tree.map(cat, params["components"], new),
            "log_weights": cat(params["log_weights"], jnp.zeros((extra,))),
            "exponents": cat(params["exponents"], jnp.zeros((extra,))),
            "active": cat(params["active"], jnp.zeros((extra,), bool)),
            "log_z": params["log_z"],
        }
        return bigger, out

    # -- weights ------------------------------------------------------------------------------
    def _others(self, params, exclude):
        """Mask of active components other than ``exclude`` (an index, may be traced, or None)."""
        mask = params["active"]
        if exclude is not None:
            mask = mask & (jnp.arange(self.num_components) != exclude)
        return mask, jnp.any(mask)

    def mixture_log_weights(self, params, exclude=None):
        """Normalised additive log-weights over active components (``-inf`` elsewhere), the
        ``exclude``-th left out; and whether any component remains."""
        mask, has = self._others(params, exclude)
        lw = jnp.where(mask, params["log_weights"], -jnp.inf)
        lse = jax.nn.logsumexp(jnp.where(mask, params["log_weights"], -1e30))
        return jnp.where(mask, lw - lse, -jnp.inf), has

    def assign_weight(self, params, i, rho):
        """Params with component ``i`` active and given weight ``rho`` (jittable; ``rho`` is
        clipped to [0, 1]).

        Additive: ``w_i = rho`` and the other active components keep their proportions and share
        ``1 - rho`` (the first component, with no others, gets weight 1). Multiplicative: exponent
        ``rho`` (component 0 keeps exponent 1). ``log_z`` is not updated here.
        """
        rho = jnp.clip(jnp.asarray(rho, jnp.float32), 0.0, 1.0)
        idx = jnp.arange(self.num_components)
        others_lw, has = self.mixture_log_weights(params, exclude=i)
        active = params["active"] | (idx == i)
        if self.boosting == "additive":
            rho = jnp.where(has, rho, 1.0)
            lw = jnp.where(idx == i, _safe_log(rho), others_lw + _safe_log(1.0 - rho))
            lw = jnp.where(active, lw, -1e30)
            lw = jnp.where(active, lw - jax.nn.logsumexp(lw), 0.0)
            return {**params, "log_weights": lw, "active": active}
        rho = jnp.where(jnp.asarray(i) == 0, 1.0, rho)
        exps = jnp.where(idx == i, rho, params["exponents"])
        return {**params, "exponents": exps, "active": active}

    def set_weights(self, params, weights) -> dict:
        """User-given weights: additive mixture weights of the active components (each in [0, 1],
        summing to 1) or multiplicative exponents (each in [0, 1]). Untrained components must get
        weight 0."""
        w = np.asarray(weights, np.float64)
        if w.shape != (self.num_components,):
            raise ValueError(f"expected {self.num_components} weights, got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w > 1):
            raise ValueError(f"weights must lie in [0, 1], got {w.tolist()}")
        active = np.asarray(params["active"])
        if np.any(w[~active] > 0):
            raise ValueError("untrained (inactive) components must have weight 0")
        if self.boosting == "additive":
            if not np.isclose(w.sum(), 1.0, atol=1e-6):
                raise ValueError(f"additive mixture weights must sum to 1, got sum {w.sum():.6g}")
            lw = np.where(active, np.log(np.maximum(w, _TINY)), 0.0)
            return {**params, "log_weights": jnp.asarray(lw, jnp.float32)}
        return {**params, "exponents": jnp.asarray(np.where(active, w, 0.0), jnp.float32)}

    def set_component_weight(self, params, i: int, rho: float) -> dict:
        """Host-side :meth:`assign_weight` with a clear error for ``rho`` outside [0, 1]."""
        if not (0.0 <= float(rho) <= 1.0):
            raise ValueError(f"a boosting weight rho must lie in [0, 1], got {rho}")
        if not 0 <= int(i) < self.num_components:
            raise ValueError(f"component index {i} out of range [0, {self.num_components})")
        return self.assign_weight(params, int(i), float(rho))

    # -- densities ----------------------------------------------------------------------------
    def _flip(self, i, x):
        """Odd components see reversed coordinates when ``alternate`` (the original code's
        ``flip_init``: boosted RealNVP components alternate which half their couplings
        transform). A permutation: no log-determinant."""
        if not self.alternate:
            return x
        return jnp.where(jnp.asarray(i) % 2 == 1, x[..., ::-1], x)

    def component_log_prob(self, p_i, i, x, context=None):
        """``log g_i(x)`` for the params ``p_i`` of component ``i`` alone."""
        return self.flow.log_prob(p_i, self._flip(i, x), context)

    def component_sample_and_log_prob(self, p_i, i, key, n: int, context=None):
        x, log_q = self.flow.sample_and_log_prob(p_i, key, n, context)
        return self._flip(i, x), log_q

    def component_log_probs(self, params, x, context=None):
        """``log g_j(x)`` of every component: shape ``(C,) + batch``."""
        idx = jnp.arange(self.num_components)
        one = lambda p, i: self.component_log_prob(p, i, x, context)
        if self.component_map == "scan":  # one component at a time (lax.map = a scan)
            return jax.lax.map(lambda a: one(*a), (params["components"], idx))
        return jax.vmap(one)(params["components"], idx)

    def _combine(self, params, lp, mask, has):
        """Log-density of the (unnormalised, for multiplicative) model over components ``mask``."""
        shape = (self.num_components,) + (1,) * (lp.ndim - 1)
        # with no component selected, compute on a dummy one (then discard) so that no -inf or
        # NaN enters the gradient through the unselected branch of the final ``where``
        mask = jnp.where(has, mask, jnp.arange(self.num_components) == 0)
        if self.boosting == "additive":
            lw = jnp.where(mask, params["log_weights"], -jnp.inf)
            lw = lw - jax.nn.logsumexp(jnp.where(mask, params["log_weights"], -1e30))
            out = jax.nn.logsumexp(lw.reshape(shape) + lp, axis=0)
        else:
            terms = jnp.where(mask.reshape(shape), params["exponents"].reshape(shape) * lp, 0.0)
            out = jnp.sum(terms, axis=0)
        return jnp.where(has, out, 0.0)

    def log_prob(self, params, x, context=None):
        """``log G(x)`` (for multiplicative boosting normalised by the stored ``log_z``)."""
        lp = self.component_log_probs(params, x, context)
        mask, has = self._others(params, None)
        out = self._combine(params, lp, mask, has)
        if self.boosting == "multiplicative":
            out = out - params["log_z"]
        return out

    def log_prob_excluding(self, params, i, x, context=None):
        """``log G_{-i}(x)``: the model of all active components but ``i`` (additive: the
        renormalised mixture; multiplicative: unnormalised), and whether any such component
        exists (if not, the value is 0: boosting starts from a uniform ``G_0``)."""
        lp = self.component_log_probs(params, x, context)
        mask, has = self._others(params, i)
        return self._combine(params, lp, mask, has), has

    # -- sampling -----------------------------------------------------------------------------
    def _sample_from(self, params, log_w, key, n: int, context=None):
        """``n`` draws from the additive mixture with log-weights ``log_w`` (one vectorised
        call: every component pushes the same base draws, the chosen rows are kept)."""
        k_c, k_z = jax.random.split(key)
        idx = jax.random.categorical(k_c, log_w, shape=(n,))
        z = self.flow.base_distribution().sample(seed=k_z, sample_shape=(n,))
        ctx = self.flow._sample_context(context, n)
        if self.component_map == "scan":
            return self._push_sorted(params, idx, z, ctx), idx
        xs = jax.vmap(lambda p, i: self._flip(i, self.flow.bijector(p, ctx).forward(z)))(
            params["components"], jnp.arange(self.num_components)
        )
        return xs[idx, jnp.arange(n)], idx

    def _push_sorted(self, params, idx, z, ctx):
        """Pushes each base draw through its own component only, with static shapes: the draws
        are sorted by component and cut into chunks of ``b = sample_chunk`` rows that each
        belong to one component (each component's run padded to a multiple of ``b``), and a
        scan over the ``ceil(n / b) + C`` chunk slots pushes one chunk through one component
        (read by dynamic index). Work: ``<= n + C b`` rows instead of ``C n``."""
        n, C = idx.shape[0], self.num_components
        b = min(self.sample_chunk, n)
        slots = -(-n // b) + C
        order = jnp.argsort(idx)
        counts = jnp.bincount(idx, length=C)
        row_start = jnp.cumsum(counts) - counts  # first sorted row of each component
        chunks = -(-counts // b)
        chunk_end = jnp.cumsum(chunks)
        comp = jnp.searchsorted(chunk_end, jnp.arange(slots), side="right")  # C = unused slot
        comp_c = jnp.minimum(comp, C - 1)
        pos = jnp.arange(slots) - (chunk_end - chunks)[comp_c]
        offs = pos[:, None] * b + jnp.arange(b)[None]  # (slots, b) row within the component
        valid = (comp[:, None] < C) & (offs < counts[comp_c][:, None])
        rows = jnp.where(valid, row_start[comp_c][:, None] + offs, 0)
        src = order[rows]  # original index of each (slot, row)

        def push(a):
            j, r = a
            c = None if ctx is None else ctx[r]
            x = self.flow.bijector(_take(params["components"], j), c).forward(z[r])
            return self._flip(j, x)

        xs = jax.lax.map(push, (comp_c, src))  # (slots, b) + event
        dump = jnp.where(valid, src, n)  # invalid rows go to a dropped extra row
        out = jnp.zeros((n + 1,) + z.shape[1:], xs.dtype)
        out = out.at[dump.reshape(-1)].set(xs.reshape((-1,) + xs.shape[2:]))
        return out[:n]

    def _proposal_log_weights(self, params):
        mask = params["active"]
        return jnp.where(mask, -jnp.log(jnp.maximum(jnp.sum(mask), 1)), -jnp.inf)

    def sample_and_log_prob(
        self, params, key, n: int, context=None, oversample: int = 16
    ) -> tuple[jax.Array, jax.Array]:
        """``n`` samples and their ``log G``. Additive: component ``j ~ Categorical(w)`` then a
        base draw pushed through it. Multiplicative: sampling-importance-resampling of
        ``oversample * n`` draws from the equal-weight mixture of the trained components."""
        if self.boosting == "additive":
            lw, _ = self.mixture_log_weights(params)
            x, _ = self._sample_from(params, lw, key, n, context)
            ctx = self.flow._sample_context(context, n)
            return x, self.log_prob(params, x, ctx)
        k_prop, k_res = jax.random.split(key)
        m = n * oversample
        lq_w = self._proposal_log_weights(params)
        y, _ = self._sample_from(params, lq_w, k_prop, m)
        lp = self.component_log_probs(params, y)
        log_q = jax.nn.logsumexp(lq_w[:, None] + lp, axis=0)
        mask, has = self._others(params, None)
        log_w = self._combine(params, lp, mask, has) - log_q
        pick = jax.random.categorical(k_res, log_w, shape=(n,))
        x = y[pick]
        return x, self.log_prob(params, x)

    def sample(self, params, key, n: int, context=None):
        return self.sample_and_log_prob(params, key, n, context)[0]

    def estimate_log_z(self, params, key, num_samples: int = 20000):
        """Importance-sampling estimate of ``log Gamma = log int prod_j g_j^rho_j`` with the
        equal-weight mixture of trained components as proposal; returns ``(log_z, ess)``."""
        lq_w = self._proposal_log_weights(params)
        y, _ = self._sample_from(params, lq_w, key, num_samples)
        lp = self.component_log_probs(params, y)
        log_q = jax.nn.logsumexp(lq_w[:, None] + lp, axis=0)
        mask, has = self._others(params, None)
        log_w = self._combine(params, lp, mask, has) - log_q
        w = jax.nn.softmax(log_w)
        return _logmeanexp(log_w), 1.0 / jnp.sum(w**2)

    def distribution_check(self):
        """Raises a clear error when the component family cannot evaluate densities of its own
        samples (no inverse), which boosted VI needs for ``G_{c-1}(z)``."""
        params = jax.eval_shape(self.flow.init, jax.random.PRNGKey(0))
        x = jax.ShapeDtypeStruct((2,) + self.flow.event_shape, jnp.float32)
        ctx = (
            None
            if self.flow.context_shape is None
            else jax.ShapeDtypeStruct((2,) + self.flow.context_shape, jnp.float32)
        )
        try:
            jax.eval_shape(self.flow.log_prob, params, x, ctx)
        except NotImplementedError as err:
            raise ValueError(
                "boosted VI evaluates the fixed components' densities at samples of the new one, "
                f"which needs every layer's inverse; this component family has none ({err}). "
                "Use coupling (realnvp/glow), planar, radial, Sylvester or MAF/IAF components."
            ) from None


# -- stage transitions ------------------------------------------------------------------------


@flax.struct.dataclass
class StageState:
    params: Any
    opt_state: Any
    index: jax.Array  # int32: the component being trained


def stage_transition(gbnf: GBNF, loss_fn: Callable, optimizer) -> Transition:
    """A Transition training component ``state.index`` of ``gbnf`` on
    ``loss_fn(component_params, frozen_params, index, batch, key) -> (loss, aux)``.

    The optimizer acts on the stacked ``components``; the gradient is nonzero only in row
    ``index`` (the component is read with a dynamic index; the rest is ``stop_gradient``) and
    the updates are masked to that row as well.
    """

    def init(params, index) -> StageState:
        return StageState(params, optimizer.init(params["components"]), jnp.int32(index))

    def loss(components, params, index, batch, key):
        frozen = jax.lax.stop_gradient(params)
        return loss_fn(_take(components, index), frozen, index, batch, key)

    def step(state: StageState, batch, key):
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(
            state.params["components"], state.params, state.index, batch, key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params["components"])
        row = jax.nn.one_hot(state.index, gbnf.num_components)
        updates = jax.tree.map(lambda u: u * row.reshape((-1,) + (1,) * (u.ndim - 1)), updates)
        components = optax.apply_updates(state.params["components"], updates)
        metrics = {"loss": value, "grad_norm": optax.global_norm(grads), **aux}
        return StageState(
            {**state.params, "components": components}, opt_state, state.index
        ), metrics

    return Transition(init, step)


def resampling_log_probs(log_G, has, clip: tuple[float, float] | None = (0.01, 0.1)):
    """Log-probabilities ``softmax(-log G)`` over a minibatch, clipped as the original code:
    when the largest exceeds ``clip[1]``, all are clipped to ``[clip[0], clip[1]]``; then
    renormalised. Uniform when there is no previous component."""
    w = jax.nn.softmax(jnp.where(has, -log_G, 0.0))
    if clip is not None:
        lo, hi = clip
        w = jnp.where(jnp.max(w) > hi, jnp.clip(w, lo, hi), w)
        w = w / jnp.sum(w)
    return jnp.log(w)


def training_weight(gbnf: GBNF, params, index):
    """The weight the trained component ``index`` has in the mixture it is trained against:
    its current mixture weight when it is already active (fine-tuning: coordinate descent on
    the mixture NLL), else ``1 / (number of active others + 1)`` (a new component enters as an
    equal member; the Frank-Wolfe step ``rho`` is refitted afterwards)."""
    mask, _ = gbnf._others(params, index)
    n_others = jnp.sum(mask)
    lw = jnp.where(params["active"], params["log_weights"], -1e30)
    w_now = jnp.exp(lw[index] - jax.nn.logsumexp(lw))
    rho = jnp.where(params["active"][index], w_now, 1.0 / (n_others + 1.0))
    return jnp.clip(rho, 1e-3, 1.0 - 1e-3)


def density_loss(gbnf: GBNF, reweight: str = "boosted", clip=(0.01, 0.1)) -> Callable:
    """The loss of one boosted component (section 4.3).

    ``"boosted"`` (default): the mixture NLL (4.6) as a function of the new component,
    ``-mean log((1 - rho) G_{c-1}(x) + rho g(x))`` with ``rho`` from :func:`training_weight`.
    Its gradient is ``-mean[rho g / G_c * grad log g]``: the functional gradient ``1/G_{c-1}``
    of (4.7)-(4.8) weighting the likelihood, with the weights ``g / ((1-rho) G + rho g)``
    bounded by ``1/rho`` and normalised by the current mixture (as ``rho -> 0`` it is exactly
    the gradient of (4.8), ``mean g(x)/G_{c-1}(x)``). ``"resample"``/``"importance"``: maximum
    likelihood on data re-weighted by ``1/G_{c-1}`` (eq. 4.13, Grover & Ermon), as the original
    code does; ``"none"``: plain maximum likelihood (ablation)."""
    if reweight not in REWEIGHT:
        raise ValueError(f"reweight must be one of {REWEIGHT}, got {reweight!r}")

    def loss(p_i, frozen, index, batch, key):
        x, ctx = batch
        log_G, has = gbnf.log_prob_excluding(frozen, index, x, ctx)
        log_w = resampling_log_probs(log_G, has, clip)
        if reweight == "boosted":
            log_g = gbnf.component_log_prob(p_i, index, x, ctx)
            rho = training_weight(gbnf, frozen, index)
            mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g)
            value = -jnp.mean(jnp.where(has, mix, log_g))
            # the implied per-point weights rho g / G_c (self-normalised 1/G weighting)
            resp = jax.lax.stop_gradient(jnp.exp(jnp.log(rho) + log_g - mix))
            aux = {"G_nll": -jnp.mean(log_G), "ess": jnp.sum(resp) ** 2 / jnp.sum(resp**2)}
            return value, aux
        if reweight == "resample":
            idx = jax.random.categorical(key, log_w, shape=(x.shape[0],))
            xr = x[idx]
            cr = None if ctx is None else ctx[idx]
            value = -jnp.mean(gbnf.component_log_prob(p_i, index, xr, cr))
        elif reweight == "importance":
            value = -jnp.sum(jnp.exp(log_w) * gbnf.component_log_prob(p_i, index, x, ctx))
        else:
            value = -jnp.mean(gbnf.component_log_prob(p_i, index, x, ctx))
        aux = {"G_nll": -jnp.mean(log_G), "ess": 1.0 / jnp.sum(jnp.exp(2 * log_w))}
        return value, aux

    return loss


def vi_loss(
    gbnf: GBNF,
    log_target: Callable,
    num_samples: int,
    regularization: float = 1.0,
    log_g_floor: float | None = -10.0,
) -> Callable:
    """Eq. 4.20/4.21: ``E_g[max(log G_{c-1}(z), floor) - log p~(z) + lambda log g(z)]`` with
    ``z ~ g`` reparameterised (the plain negative ELBO when no component is trained yet)."""
    target = jax.vmap(log_target)

    def loss(p_i, frozen, index, batch, key):
        del batch
        z, log_g = gbnf.component_sample_and_log_prob(p_i, index, key, num_samples)
        log_p = target(z)
        log_G, has = gbnf.log_prob_excluding(frozen, index, z)
        if log_g_floor is not None:
            log_G = jnp.maximum(log_G, log_g_floor)
        boosted = jnp.mean(log_G - log_p + regularization * log_g)
        plain = jnp.mean(log_g - log_p)
        return jnp.where(has, boosted, plain), {"elbo_g": -plain, "log_G": jnp.mean(log_G)}

    return loss


# -- weights: line search and Algorithm 1 -----------------------------------------------------


def _grid_minimise(f: Callable, num: int = 101, refine: int = 2):
    """Minimises a scalar function of rho on [0, 1] by a grid then ``refine`` finer grids
    around the best point (vectorised; each grid is one call)."""
    lo, hi = 0.0, 1.0
    best = None
    for _ in range(refine + 1):
        grid = jnp.linspace(lo, hi, num)
        vals = f(grid)
        vals = jnp.where(jnp.isfinite(vals), vals, jnp.inf)
        k = int(jnp.argmin(vals))
        best = (float(grid[k]), float(vals[k]))
        step = (hi - lo) / (num - 1)
        lo, hi = max(0.0, best[0] - step), min(1.0, best[0] + step)
    return best


def density_rho_objective(gbnf: GBNF, params, i, x, context=None, key=None, num_proposal=8192):
    """Held-out NLL of the model as a function of the weight of component ``i``: a function
    ``rhos (R,) -> nll (R,)`` (jitted internally). Multiplicative: includes ``log Gamma(rho)``
    estimated by importance sampling (fixed proposal draws, so the curve is smooth in rho)."""
    lp = gbnf.component_log_probs(params, x, context)
    log_g = lp[i]
    mask, has = gbnf._others(params, i)
    log_G = gbnf._combine(params, lp, mask, has)
    if gbnf.boosting == "additive":

        def f(rhos):
            r = rhos[:, None]
            mix = jnp.logaddexp(jnp.log1p(-r) + log_G[None], jnp.log(r) + log_g[None])
            return -jnp.mean(mix, axis=1)

        return jax.jit(f)
    # multiplicative: proposal = equal mixture of the active components and i
    key = jax.random.PRNGKey(0) if key is None else key
    prop = {**params, "active": params["active"] | (jnp.arange(gbnf.num_components) == i)}
    lq_w = gbnf._proposal_log_weights(prop)
    y, _ = gbnf._sample_from(prop, lq_w, key, num_proposal)
    lp_y = gbnf.component_log_probs(params, y)
    log_q = jax.nn.logsumexp(lq_w[:, None] + lp_y, axis=0)
    log_G_y = gbnf._combine(params, lp_y, mask, has)

    def f(rhos):
        r = rhos[:, None]
        log_z = _logmeanexp(log_G_y[None] + r * lp_y[i][None] - log_q[None], axis=1)
        return -jnp.mean(log_G[None] + r * log_g[None], axis=1) + log_z

    return jax.jit(f)


@flax.struct.dataclass
class RhoState:
    rho: jax.Array
    t: jax.Array
    done: jax.Array


def rho_sgd_transition(
    gradient: Callable,
    lr: float = 0.05,
    decay: float = 0.05,
    tol: float = 1e-3,
    min_iters: int = 10,
) -> Transition:
    """Algorithm 1 as a Transition: ``rho <- clip(rho - lr / (1 + decay t) * grad, 0, 1)``,
    where ``gradient(rho, batch, key)`` estimates dF/drho; stops moving once a step changes rho by
    less than ``tol`` after ``min_iters`` iterations. (The printed algorithm's loop condition
    ``while |rho_t - rho_{t-1}| < eps`` is inverted; this is the intended convergence test,
    as in the original code's ``update_rho``.)"""

    def init(rho0) -> RhoState:
        return RhoState(jnp.float32(rho0), jnp.int32(0), jnp.bool_(False))

    def step(state: RhoState, batch, key):
        g = gradient(state.rho, batch, key)
        step_size = lr / (1.0 + decay * state.t)
        new = jnp.clip(state.rho - step_size * g, 0.0, 1.0)
        new = jnp.where(state.done, state.rho, new)
        done = state.done | ((state.t >= min_iters) & (jnp.abs(new - state.rho) < tol))
        return RhoState(new, state.t + 1, done), {"rho": new, "rho_grad": g}

    return Transition(init, step)


def density_rho_gradient(gbnf: GBNF, params, i) -> Callable:
    """``dNLL/drho = -mean[(g - G) / ((1 - rho) G + rho g)]`` on a held-out minibatch
    (additive boosting)."""

    def grad(rho, batch, key):
        del key
        x, ctx = batch
        lp = gbnf.component_log_probs(params, x, ctx)
        mask, has = gbnf._others(params, i)
        log_G = gbnf._combine(params, lp, mask, has)
        log_g = lp[i]
        mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + log_g)
        return -jnp.mean(jnp.exp(log_g - mix) - jnp.exp(log_G - mix))

    return grad


def vi_rho_gradient(gbnf: GBNF, params, i, log_target: Callable, num_samples: int) -> Callable:
    """Eq. 4.23: ``E_g[gamma_rho(z)] - E_{G_{c-1}}[gamma_rho(z)]`` with
    ``gamma_rho = log((1 - rho) G_{c-1} + rho g) - log p~`` (Monte Carlo, fresh draws)."""
    target = jax.vmap(log_target)

    def gamma(rho, z):
        lp = gbnf.component_log_probs(params, z)
        mask, has = gbnf._others(params, i)
        log_G = gbnf._combine(params, lp, mask, has)
        mix = jnp.logaddexp(jnp.log1p(-rho) + log_G, jnp.log(rho) + lp[i])
        return mix - target(z)

    def grad(rho, batch, key):
        del batch
        k_g, k_G = jax.random.split(key)
        z_g, _ = gbnf.component_sample_and_log_prob(
            _take(params["components"], i), i, k_g, num_samples
        )
        lw, _ = gbnf.mixture_log_weights(params, exclude=i)
        z_G, _ = gbnf._sample_from(params, lw, k_G, num_samples)
        return jnp.mean(gamma(rho, z_g)) - jnp.mean(gamma(rho, z_G))

    return grad


def vi_rho_objective(gbnf: GBNF, params, i, log_target, key, num_samples: int = 4096):
    """``F(rho) = rho E_g[gamma_rho] + (1 - rho) E_G[gamma_rho]`` (the negative ELBO of the
    mixture, eq. 4.22) with fixed draws: a function ``rhos (R,) -> F (R,)``."""
    target = jax.vmap(log_target)
    k_g, k_G = jax.random.split(key)
    z_g, _ = gbnf.component_sample_and_log_prob(_take(params["components"], i), i, k_g, num_samples)
    lw, _ = gbnf.mixture_log_weights(params, exclude=i)
    z_G, _ = gbnf._sample_from(params, lw, k_G, num_samples)
    mask, has = gbnf._others(params, i)

    def parts(z):
        lp = gbnf.component_log_probs(params, z)
        return gbnf._combine(params, lp, mask, has), lp[i], target(z)

    G_g, g_g, p_g = parts(z_g)
    G_G, g_G, p_G = parts(z_G)

    def f(rhos):
        r = rhos[:, None]
        gam = lambda lG, lg, lp: jnp.logaddexp(jnp.log1p(-r) + lG, jnp.log(r) + lg) - lp
        return rhos * jnp.mean(gam(G_g, g_g, p_g), 1) + (1 - rhos) * jnp.mean(gam(G_G, g_G, p_G), 1)

    return jax.jit(f)


# -- the training drivers ---------------------------------------------------------------------


class _Runner:
    """Runs a Transition for a number of steps with one compiled chunk reused across calls (all
    boosting stages share it: the component index lives in the state)."""

    def __init__(self, transition, batch_size, num_examples, chunk):
        self.chunk = int(chunk)
        self.run = make_chunk_runner(transition, batch_size, num_examples)

    def __call__(self, state, data, key, steps, offset=0):
        records = []
        host_key = np.asarray(key)
        for start in range(0, steps, self.chunk):
            new, metrics, finite = self.run(
                state, data, host_key, np.int32(offset + start), self.chunk
            )
            if not bool(finite):
                raise DivergenceError(
                    f"boosting stage diverged near step {offset + start}; lower the learning rate",
                    state,
                    offset + start,
                )
            state = new
            records.append({k: float(np.mean(v)) for k, v in metrics.items()})
        return state, records


def _chunking(steps: int, max_chunk: int = 1000) -> tuple[int, int]:
    """(chunk, steps rounded up to a multiple of chunk) so every chunk has one shape."""
    if steps <= max_chunk:
        return max(steps, 1), steps
    n = -(-steps // max_chunk)
    chunk = -(-steps // n)
    return chunk, chunk * n


def _log(run, msg):
    if run is not None:
        run.print(msg)


def fit_density(
    gbnf: GBNF,
    data,
    *,
    key,
    steps: int,
    batch_size: int = 256,
    optimizer=None,
    context=None,
    val_data=None,
    val_context=None,
    reweight: str | None = None,
    clip: tuple[float, float] | None = (0.01, 0.1),
    rho_method: str = "line_search",
    rho_init: float | None = None,
    rho_steps: int = 100,
    rho_lr: float = 0.05,
    finetune_passes: int = 0,
    finetune_steps: int | None = None,
    params=None,
    run=None,
    label: str = "gbnf",
) -> tuple[dict, dict]:
    """Boosted density estimation (section 4.3): trains the untrained components in order.

    Starts from ``params`` (or a fresh init) and trains every component that is not active yet,
    so calling it again after :meth:`GBNF.grow` adds components and continues. ``reweight``
    (see :func:`density_loss`) defaults to ``"boosted"`` for additive and ``"resample"`` (eq.
    4.13) for multiplicative boosting. Each stage runs
    ``steps`` Adam steps (``optax.adam(1e-3)`` unless ``optimizer``); then ``rho`` is fitted on
    ``val_data`` (if None, the last 10% of ``data`` is held out). Returns ``(params, info)`` with
    per-stage records (``rho_init``, ``rho``, held-out NLL before and after fitting rho).
    """
    if reweight is None:
        reweight = "boosted" if gbnf.boosting == "additive" else "resample"
    if reweight not in REWEIGHT:
        raise ValueError(f"reweight must be one of {REWEIGHT}, got {reweight!r}")
    if reweight == "boosted" and gbnf.boosting == "multiplicative":
        raise ValueError(
            "reweight='boosted' is the additive mixture objective (4.6); multiplicative boosting "
            "trains new components on the re-weighted data of eq. 4.13 ('resample'/'importance')"
        )
    if rho_method not in RHO_METHODS:
        raise ValueError(f"rho_method must be one of {RHO_METHODS}, got {rho_method!r}")
    if rho_method == "sgd" and gbnf.boosting == "multiplicative":
        raise ValueError("rho by SGD is implemented for additive boosting; use line_search")
    if rho_init is not None and not 0.0 <= rho_init <= 1.0:
        raise ValueError(f"rho_init must lie in [0, 1], got {rho_init}")
    data = check_finite(data, "data").astype(np.float32)
    gbnf.flow.check_inputs(data, context)
    ctx = None if context is None else np.asarray(context, np.float32)
    if val_data is None:
        n_val = max(len(data) // 10, 1)
        val_data, data = data[-n_val:], data[:-n_val]
        if ctx is not None:
            val_context, ctx = ctx[-n_val:], ctx[:-n_val]
        _log(run, f"[{label}] no val_data: holding out the last {n_val} training points for rho")
    val_data = check_finite(val_data, "val_data").astype(np.float32)
    gbnf.flow.check_inputs(val_data, val_context)
    val_ctx = None if val_context is None else jnp.asarray(val_context, jnp.float32)

    k_init, k_fit = jax.random.split(key)
    params = gbnf.init(k_init) if params is None else params
    optimizer = optimizer or optax.adam(1e-3)
    transition = stage_transition(gbnf, density_loss(gbnf, reweight, clip), optimizer)
    chunk, steps = _chunking(steps)
    runner = _Runner(transition, batch_size, len(data), chunk)
    train = (jnp.asarray(data), None if ctx is None else jnp.asarray(ctx))
    val_nll_fn = jax.jit(lambda p: -jnp.mean(gbnf.log_prob(p, val_data, val_ctx)))
    data_init = jax.jit(lambda p, i: _data_init_row(gbnf, p, i, train[0][:1024], _head(train[1])))
    info: dict = {"stages": [], "seconds": 0.0}
    t0 = time.time()
    start = gbnf.num_active(params)
    schedule = [(c, "boost") for c in range(start, gbnf.num_components)]
    for p in range(finetune_passes):
        schedule += [(c, f"finetune{p + 1}") for c in range(gbnf.num_components)]
    global_step = 0
    for n_stage, (c, phase) in enumerate(schedule):
        n_steps = steps if phase == "boost" else (finetune_steps or steps)
        if phase == "boost":
            params = data_init(params, c)
        state = transition.init(params, c)
        state, records = runner(
            state, train, jax.random.fold_in(k_fit, n_stage), _round(n_steps, chunk)
        )
        params = state.params
        for r in records:
            global_step += chunk
            if run is not None:
                run.log_metrics(global_step, model=label, component=c, phase=phase, **r)
        params, record = _fit_density_weight(
            gbnf,
            params,
            c,
            val_data,
            val_ctx,
            rho_method,
            rho_init,
            rho_steps,
            rho_lr,
            jax.random.fold_in(k_fit, 10_000 + n_stage),
            val_nll_fn,
        )
        record.update(component=c, phase=phase, train_loss=records[-1]["loss"])
        info["stages"].append(record)
        _log(
            run,
            f"[{label}] {phase} component {c + 1}/{gbnf.num_components}: rho {record['rho']:.3f} "
            f"(init {record['rho_init']:.3f}); held-out NLL {record['val_nll']:.4f} "
            f"(with initial rho {record['val_nll_init']:.4f})",
        )
    info["seconds"] = time.time() - t0
    info["weights"] = gbnf.weights(params).tolist()
    return params, info


def _head(ctx):
    return None if ctx is None else ctx[:1024]


def _round(steps, chunk):
    return -(-steps // chunk) * chunk


def _data_init_row(gbnf: GBNF, params, i, x, ctx):
    """Data-dependent init (ActNorm) of component ``i`` on a batch (identity for other layers)."""
    row = gbnf.flow.data_init(_take(params["components"], i), gbnf._flip(i, x), ctx)
    comps = jax.tree.map(lambda a, r: a.at[i].set(r), params["components"], row)
    return {**params, "components": comps}


def _fit_density_weight(
    gbnf, params, c, val_x, val_ctx, method, rho_init, rho_steps, rho_lr, key, val_nll_fn
):
    others = int(np.sum(np.asarray(gbnf._others(params, c)[0])))
    if others == 0:  # the first component (or the only active one): weight 1 / exponent 1
        params = gbnf.assign_weight(params, c, 1.0)
        if gbnf.boosting == "multiplicative":
            params = {**params, "log_z": jnp.zeros(())}
        nll = float(val_nll_fn(params))
        return params, {"rho_init": 1.0, "rho": 1.0, "val_nll_init": nll, "val_nll": nll}
    rho0 = float(rho_init) if rho_init is not None else 1.0 / gbnf.num_components
    if c == 0 and gbnf.boosting == "multiplicative":
        rho0 = 1.0
    f = density_rho_objective(gbnf, params, c, val_x, val_ctx, key)
    nll_init = float(f(jnp.array([rho0]))[0])
    if c == 0 and gbnf.boosting == "multiplicative":
        rho = 1.0
    elif method == "line_search":
        rho, _ = _grid_minimise(f)
    else:
        grad = density_rho_gradient(gbnf, params, c)
        tr = rho_sgd_transition(grad, lr=rho_lr)
        bs = min(1024, len(val_x))
        runner = _Runner(tr, bs, len(val_x), rho_steps)
        state, _ = runner(tr.init(rho0), (jnp.asarray(val_x), val_ctx), key, rho_steps)
        rho = float(state.rho)
    params = gbnf.assign_weight(params, c, rho)
    record = {"rho_init": rho0, "rho": float(rho), "val_nll_init": nll_init}
    if gbnf.boosting == "multiplicative":
        log_z, ess = jax.jit(gbnf.estimate_log_z, static_argnums=2)(
            params, jax.random.fold_in(key, 1), 20000
        )
        params = {**params, "log_z": log_z}
        record.update(log_z=float(log_z), log_z_ess=float(ess))
    record["val_nll"] = float(val_nll_fn(params))
    return params, record


def fit_vi(
    gbnf: GBNF,
    log_target: Callable,
    *,
    key,
    steps: int,
    num_samples: int = 256,
    optimizer=None,
    regularization: float = 1.0,
    log_g_floor: float | None = -10.0,
    rho_method: str = "sgd",
    rho_init: float | None = None,
    rho_steps: int = 100,
    rho_lr: float = 0.005,
    rho_samples: int = 1024,
    finetune_passes: int = 0,
    finetune_steps: int | None = None,
    params=None,
    run=None,
    label: str = "gbnf",
) -> tuple[dict, dict]:
    """Boosted variational inference on an unnormalised ``log_target`` (sections 4.5-4.6).

    Component 1 maximises the ELBO; each further one minimises eq. 4.20 with entropy weight
    ``regularization`` (lambda; 1.0 as in the thesis's VAEs, 0.5-0.8 for the toy targets) and
    ``log G`` clamped below at ``log_g_floor`` (-10, the original code's ``G_MAX_LOSS``). Then
    ``rho`` by Algorithm 1 (``rho_method="sgd"``: ``rho_steps`` iterations from ``1/C`` with
    step ``rho_lr / (1 + 0.05 t)``, the original's defaults) or by line search on the mixture's
    negative ELBO with fixed draws. Returns ``(params, info)``.
    """
    if gbnf.conditional:
        raise ValueError("boosted VI here targets an unconditional log density")
    if rho_method not in RHO_METHODS:
        raise ValueError(f"rho_method must be one of {RHO_METHODS}, got {rho_method!r}")
    if gbnf.boosting != "additive":
        raise ValueError("boosted VI uses the additive mixture (eq. 4.17)")
    if regularization < 0:
        raise ValueError(f"regularization (lambda) must be >= 0, got {regularization}")
    if rho_init is not None and not 0.0 <= rho_init <= 1.0:
        raise ValueError(f"rho_init must lie in [0, 1], got {rho_init}")
    if gbnf.num_components > 1:
        gbnf.distribution_check()
    k_init, k_fit = jax.random.split(key)
    params = gbnf.init(k_init) if params is None else params
    optimizer = optimizer or optax.adam(1e-3)
    transition = stage_transition(
        gbnf, vi_loss(gbnf, log_target, num_samples, regularization, log_g_floor), optimizer
    )
    chunk, steps = _chunking(steps)
    runner = _Runner(transition, None, None, chunk)
    info: dict = {"stages": []}
    t0 = time.time()
    schedule = [(c, "boost") for c in range(gbnf.num_active(params), gbnf.num_components)]
    for p in range(finetune_passes):
        schedule += [(c, f"finetune{p + 1}") for c in range(gbnf.num_components)]
    global_step = 0
    for n_stage, (c, phase) in enumerate(schedule):
        n_steps = steps if phase == "boost" else (finetune_steps or steps)
        state = transition.init(params, c)
        state, records = runner(
            state, None, jax.random.fold_in(k_fit, n_stage), _round(n_steps, chunk)
        )
        params = state.params
        for r in records:
            global_step += chunk
            if run is not None:
                run.log_metrics(global_step, model=label, component=c, phase=phase, **r)
        k_rho = jax.random.fold_in(k_fit, 10_000 + n_stage)
        others = int(np.sum(np.asarray(gbnf._others(params, c)[0])))
        record = {"component": c, "phase": phase, "train_loss": records[-1]["loss"]}
        if others == 0:
            params = gbnf.assign_weight(params, c, 1.0)
            record.update(rho_init=1.0, rho=1.0)
        else:
            rho0 = float(rho_init) if rho_init is not None else 1.0 / gbnf.num_components
            f = vi_rho_objective(gbnf, params, c, log_target, k_rho, max(rho_samples, 1024))
            if rho_method == "line_search":
                rho, _ = _grid_minimise(f)
            else:
                tr = rho_sgd_transition(
                    vi_rho_gradient(gbnf, params, c, log_target, rho_samples), lr=rho_lr
                )
                rho_runner = _Runner(tr, None, None, rho_steps)
                state_r, _ = rho_runner(tr.init(rho0), None, k_rho, rho_steps)
                rho = float(state_r.rho)
            vals = f(jnp.array([rho0, rho]))
            params = gbnf.assign_weight(params, c, rho)
            record.update(
                rho_init=rho0, rho=float(rho), neg_elbo_init=float(vals[0]), neg_elbo=float(vals[1])
            )
        info["stages"].append(record)
        _log(
            run,
            f"[{label}] {phase} component {c + 1}/{gbnf.num_components}: rho {record['rho']:.3f}",
        )
    info["seconds"] = time.time() - t0
    info["weights"] = gbnf.weights(params).tolist()
    return params, info


def mixture_elbo(gbnf: GBNF, params, key, log_target: Callable, num_samples: int):
    """Monte-Carlo ELBO ``E_G[log p~ - log G]`` of the boosted model (draws from the mixture)."""
    x, log_q = gbnf.sample_and_log_prob(params, key, num_samples)
    return jnp.mean(jax.vmap(log_target)(x) - log_q)


def importance_log_evidence(gbnf: GBNF, params, key, log_target: Callable, num_samples: int):
    """``log Z ~= logmeanexp(log p~(x_i) - log G(x_i))``, ``x_i ~ G``."""
    x, log_q = gbnf.sample_and_log_prob(params, key, num_samples)
    return _logmeanexp(jax.vmap(log_target)(x) - log_q)
