"""The boosted model: ``C`` components of one flow family, stacked, combined by their weights.

A :class:`GBNF` is ``num_components`` copies of a :class:`~flowjax_thesis.flows.Flow` (the
component family) whose params are stacked along a leading axis and evaluated with ``vmap`` (or
a scan); no Python loop over components runs on the hot path. Params are a dict::

    components   the stacked component params (leading axis C)
    log_weights  (C,) mixture log-weights (additive boosting; normalised over active components)
    exponents    (C,) exponents rho_j of the multiplicative model (the first one is 1)
    active       (C,) bool, which components have been trained (the others are ignored)
    log_z        ()   log partition function Gamma of the multiplicative model (0 for additive)

Additive boosting is a mixture (see :mod:`~flowjax_thesis.models.gbnf.weights`). Multiplicative
boosting (eq. 4.10)::

    log G_c(x) = sum_j rho_j log g_j(x) - log Gamma_c,   Gamma_c = int prod_j g_j(x)^rho_j dx

with ``Gamma_c`` estimated by importance sampling from the equal-weight mixture of the trained
components (:meth:`GBNF.estimate_log_z`); its samples come from sampling-importance-resampling
from the same proposal, so they are approximate while ``log_prob`` is exact up to ``Gamma``.

The components are used only through the public ``Flow`` API (``log_prob``, ``sample``), so any
``Flow`` works as a component, including ones with a context-dependent base (a VAE posterior).
Each mixture draw is one draw of its own component with its own key; the draws of a row are the
same whichever way the components are mapped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.flows import Flow
from flowjax_thesis.models.gbnf import weights as W

BOOSTING = ("additive", "multiplicative")
COMPONENT_MAPS = ("vmap", "scan")


def _is_shape(s) -> bool:
    return isinstance(s, tuple) and all(isinstance(d, int) for d in s)


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
    ``alternate``: odd components see reversed coordinates (the original code's ``flip_init``).
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
        return W.take(params["components"], i)

    def num_active(self, params) -> int:
        return int(np.sum(np.asarray(params["active"])))

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

    # -- weights (see weights.py) -------------------------------------------------------------
    def weights(self, params) -> np.ndarray:
        """Mixture weights (additive) or exponents (multiplicative); 0 for untrained components."""
        return W.host_weights(params, self.boosting)

    def mixture_log_weights(self, params, exclude=None):
        return W.mixture_log_weights(params, exclude)

    def assign_weight(self, params, i, rho):
        """:func:`~flowjax_thesis.models.gbnf.weights.assign_weight` for this model (jittable)."""
        return W.assign_weight(params, i, rho, self.boosting)

    def set_weights(self, params, weights) -> dict:
        """User-given weights (validated; see :func:`weights.checked_weights`)."""
        return W.checked_weights(params, weights, self.boosting)

    def set_component_weight(self, params, i: int, rho: float) -> dict:
        """Host-side :meth:`assign_weight` with a clear error for ``rho`` outside [0, 1]."""
        if not (0.0 <= float(rho) <= 1.0):
            raise ValueError(f"a boosting weight rho must lie in [0, 1], got {rho}")
        if not 0 <= int(i) < self.num_components:
            raise ValueError(f"component index {i} out of range [0, {self.num_components})")
        return self.assign_weight(params, int(i), float(rho))

    # -- densities ----------------------------------------------------------------------------
    def _flip(self, i, x):
        """Odd components see reversed coordinates when ``alternate`` (boosted RealNVP
        components alternate which half their couplings transform). No log-determinant."""
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

    def combine(self, params, lp, mask, has):
        """Log-density of the (unnormalised, for multiplicative) model over components ``mask``."""
        return W.combine(params, lp, mask, has, self.boosting)

    def log_prob(self, params, x, context=None):
        """``log G(x)`` (for multiplicative boosting normalised by the stored ``log_z``)."""
        lp = self.component_log_probs(params, x, context)
        mask, has = W.others(params)
        out = self.combine(params, lp, mask, has)
        if self.boosting == "multiplicative":
            out = out - params["log_z"]
        return out

    def log_prob_excluding(self, params, i, x, context=None):
        """``log G_{-i}(x)``: the model of all active components but ``i`` (additive: the
        renormalised mixture; multiplicative: unnormalised), and whether any such component
        exists (if not, the value is 0: boosting starts from a uniform ``G_0``)."""
        lp = self.component_log_probs(params, x, context)
        mask, has = W.others(params, i)
        return self.combine(params, lp, mask, has), has

    # -- sampling -----------------------------------------------------------------------------
    def rows_context(self, context, n: int):
        """The context with one row per draw: a context without batch dims (one example's
        shape, per leaf) is broadcast to ``n`` rows; a batched one must have ``n`` rows."""
        if self.flow.context_shape is None:
            if context is not None:
                raise ValueError("this GBNF is unconditional; do not pass a context")
            return None
        if context is None:
            raise ValueError(
                f"this GBNF is conditional: pass a context of shape {self.flow.context_shape} "
                f"(shared) or (n, ...) (one row per draw)"
            )

        def rows(shape, leaf):
            leaf = jnp.asarray(leaf)
            if leaf.shape == tuple(shape):
                return jnp.broadcast_to(leaf, (n,) + tuple(shape))
            if leaf.shape != (n,) + tuple(shape):
                raise ValueError(
                    f"expected a context leaf of shape {tuple(shape)} or {(n,) + tuple(shape)}, "
                    f"got {leaf.shape}"
                )
            return leaf

        return jax.tree.map(rows, self.flow.context_shape, context, is_leaf=_is_shape)

    def _draw(self, p_j, j, keys, ctx):
        """One draw of component ``j`` per key (and context row)."""
        if ctx is None:
            x = jax.vmap(lambda k: self.flow.sample(p_j, k))(keys)
        else:
            x = jax.vmap(lambda k, c: self.flow.sample(p_j, k, None, c))(keys, ctx)
        return self._flip(j, x)

    def _sample_from(self, params, log_w, key, n: int, context=None):
        """``n`` draws from the additive mixture with log-weights ``log_w`` and the chosen
        components: row ``r`` is a draw of component ``idx[r]`` with key ``r`` of the split."""
        k_c, k_z = jax.random.split(key)
        idx = jax.random.categorical(k_c, log_w, shape=(n,))
        keys = jax.random.split(k_z, n)
        ctx = self.rows_context(context, n)
        if self.component_map == "scan":
            return self._push_sorted(params, idx, keys, ctx), idx
        xs = jax.vmap(lambda p, j: self._draw(p, j, keys, ctx))(
            params["components"], jnp.arange(self.num_components)
        )
        return xs[idx, jnp.arange(n)], idx

    def _push_sorted(self, params, idx, keys, ctx):
        """Draws each row from its own component only, with static shapes: the rows are sorted
        by component and cut into chunks of ``b = sample_chunk`` rows that each belong to one
        component (each component's run padded to a multiple of ``b``), and a scan over the
        ``ceil(n / b) + C`` chunk slots draws one chunk from one component (read by dynamic
        index). Work: ``<= n + C b`` rows instead of ``C n``."""
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
            c = None if ctx is None else W.take(ctx, r)
            return self._draw(W.take(params["components"], j), j, keys[r], c)

        xs = jax.lax.map(push, (comp_c, src))  # (slots, b) + event
        dump = jnp.where(valid, src, n)  # invalid rows go to a dropped extra row
        out = jnp.zeros((n + 1,) + xs.shape[2:], xs.dtype)
        out = out.at[dump.reshape(-1)].set(xs.reshape((-1,) + xs.shape[2:]))
        return out[:n]

    def _proposal_draws(self, params, key, m: int):
        """``m`` draws from the equal mixture of the active components, their component
        log-densities ``(C, m)`` and the proposal's log-density."""
        lq_w = W.proposal_log_weights(params)
        y, _ = self._sample_from(params, lq_w, key, m)
        lp = self.component_log_probs(params, y)
        return y, lp, jax.nn.logsumexp(lq_w[:, None] + lp, axis=0)

    def sample_and_log_prob(
        self, params, key, n: int, context=None, oversample: int = 16
    ) -> tuple[jax.Array, jax.Array]:
        """``n`` samples and their ``log G``. Additive: component ``j ~ Categorical(w)`` then a
        draw of it. Multiplicative: sampling-importance-resampling of ``oversample * n`` draws
        from the equal-weight mixture of the trained components."""
        if self.boosting == "additive":
            lw, _ = W.mixture_log_weights(params)
            x, _ = self._sample_from(params, lw, key, n, context)
            return x, self.log_prob(params, x, self.rows_context(context, n))
        k_prop, k_res = jax.random.split(key)
        y, lp, log_q = self._proposal_draws(params, k_prop, n * oversample)
        mask, has = W.others(params)
        log_w = self.combine(params, lp, mask, has) - log_q
        x = y[W.draw_indices(k_res, log_w, n)]
        return x, self.log_prob(params, x)

    def sample(self, params, key, n: int, context=None):
        return self.sample_and_log_prob(params, key, n, context)[0]

    def estimate_log_z(self, params, key, n: int = 20000):
        """Importance-sampling estimate of ``log Gamma = log int prod_j g_j^rho_j`` with the
        equal-weight mixture of trained components as proposal; returns ``(log_z, ess)``."""
        _, lp, log_q = self._proposal_draws(params, key, n)
        mask, has = W.others(params)
        log_w = self.combine(params, lp, mask, has) - log_q
        w = jax.nn.softmax(log_w)
        return W.logmeanexp(log_w), 1.0 / jnp.sum(w**2)

    def distribution_check(self):
        """Raises a clear error when the component family cannot evaluate densities of its own
        samples (no inverse), which boosted VI needs for ``G_{c-1}(z)``."""
        params = jax.eval_shape(self.flow.init, jax.random.PRNGKey(0))
        x = jax.ShapeDtypeStruct((2,) + self.flow.event_shape, jnp.float32)
        ctx = None
        if self.flow.context_shape is not None:
            ctx = jax.tree.map(
                lambda s: jax.ShapeDtypeStruct((2,) + s, jnp.float32),
                self.flow.context_shape,
                is_leaf=_is_shape,
            )
        try:
            jax.eval_shape(self.flow.log_prob, params, x, ctx)
        except NotImplementedError as err:
            raise ValueError(
                "boosted VI evaluates the fixed components' densities at samples of the new one, "
                f"which needs every layer's inverse; this component family has none ({err}). "
                "Use coupling (realnvp/glow), planar, radial, Sylvester or MAF/IAF components."
            ) from None
