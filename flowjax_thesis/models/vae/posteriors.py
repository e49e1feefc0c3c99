"""Variational posteriors ``q(z | x)`` for the VAE: a diagonal Gaussian base ``q0(z0 | x) =
N(mu(x), diag(var(x)))`` pushed through a flow ``z_K = f_K o ... o f_1(z0)``, so
``log q(z_K | x) = log q0(z0 | x) - sum_k log|det df_k/dz_{k-1}|`` (thesis eq. 2.9).

Families (:func:`make_posterior`):

- ``gaussian``: no flow (the plain VAE).
- ``planar``, ``radial``, ``sylvester_orthogonal`` / ``_householder`` / ``_triangular``: ``K``
  layers whose parameters the encoder emits per data point (amortised, as in Rezende & Mohamed
  and van den Berg et al.); each example binds its own bijectors under ``vmap``.
- ``iaf``: ``K`` MADE autoregressive layers (one hidden layer of ``h`` units) with reversals in
  between, conditioned on the encoder features ``h(x)`` (Kingma et al., 2016).
- ``realnvp``: ``K`` RealNVP steps, each two affine couplings (one per half) with one tanh hidden
  layer of ``h`` units, global (not amortised) parameters, as in the original code.
- ``gbnf``: a mixture of ``C`` RealNVP components built with
  :class:`flowjax_thesis.models.gbnf.GBNF` (stacked component params, log-space weights), all
  sharing the amortised Gaussian base; ``log G(z | x) = logsumexp_j(log w_j + log q0(f_j^{-1}(z)
  | x) + log|det df_j^{-1}/dz|)``.

Every posterior works on one example (the encoder outputs of one ``x``) and ``n`` draws:
``sample_and_log_prob(gparams, enc, key, n) -> (z (n, d), log q (n,))``; the VAE vmaps it over
the batch. ``enc`` is a dict with ``mu``, ``log_var`` (d,), ``h`` (features) and ``amort`` (the
amortised flow parameters, a dict of arrays with a leading ``K`` axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors import Chain, Repeat, make_layer
from flowjax_thesis.flows import realnvp_flow
from flowjax_thesis.models.vae.likelihoods import log_normal_diag

POSTERIORS = (
    "gaussian",
    "planar",
    "radial",
    "sylvester_orthogonal",
    "sylvester_householder",
    "sylvester_triangular",
    "iaf",
    "realnvp",
    "gbnf",
)


def _base_sample(enc, key, n):
    mu, log_var = enc["mu"], enc["log_var"]
    eps = jax.random.normal(key, (n,) + mu.shape)
    z0 = mu + jnp.exp(0.5 * log_var) * eps
    return z0, log_normal_diag(z0, mu, log_var)


@dataclass(frozen=True)
class Gaussian:
    """The plain VAE posterior ``N(mu(x), diag(var(x)))``."""

    name: str = "gaussian"

    def amortized_shapes(self, latent: int) -> dict:
        return {}

    def init(self, key, latent: int, hidden: int):
        return {}

    def push(self, gparams, enc, z0):
        return z0, jnp.zeros(z0.shape[:-1])

    def sample_and_log_prob(self, gparams, enc, key, n: int):
        z0, log_q0 = _base_sample(enc, key, n)
        z, ldj = self.push(gparams, enc, z0)
        return z, log_q0 - ldj

    def component_elbo_samples(self, gparams, enc, key, n: int):
        """Draws and ``log q`` for the reported -ELBO (for a mixture: each draw's own component,
        the thesis's eq. 2.9 convention)."""
        return self.sample_and_log_prob(gparams, enc, key, n)

    @property
    def num_components(self) -> int:
        return 1


@dataclass(frozen=True)
class Amortized(Gaussian):
    """``K`` planar / radial / Sylvester layers with parameters from the encoder."""

    name: str = "planar"
    num_layers: int = 16
    num_ortho: int | None = None  # Sylvester orthogonal: M columns (default min(d, 32))
    num_householder: int = 8

    @property
    def layer(self):
        if self.name.startswith("sylvester_"):
            kw = {"num_ortho": self.num_ortho} if self.name.endswith("orthogonal") else {}
            if self.name.endswith("householder"):
                kw["num_householder"] = self.num_householder
            return make_layer(self.name, **kw)
        return make_layer(self.name)

    def _m(self, latent):
        return min(latent, 32) if self.num_ortho is None else self.num_ortho

    def _layer_shapes(self, latent):
        layer = self.layer
        if hasattr(layer, "param_shapes"):
            if self.name.endswith("orthogonal") and not 1 <= self._m(latent) <= latent:
                raise ValueError(f"num_ortho must be in [1, {latent}], got {self.num_ortho}")
            return layer.param_shapes((latent,))
        shapes = jax.eval_shape(lambda k: layer.init(k, (latent,)), jax.random.PRNGKey(0))
        return {k: tuple(v.shape) for k, v in shapes.items()}

    def amortized_shapes(self, latent: int) -> dict:
        return {k: (self.num_layers,) + s for k, s in self._layer_shapes(latent).items()}

    def push(self, gparams, enc, z0):
        if self.name.startswith("sylvester_"):
            return self._push_sylvester(enc["amort"], z0)
        layer = self.layer

        def body(carry, p):
            z, total = carry
            z, ld = layer.bind(p).forward_and_log_det(z)
            return (z, total + ld), None

        (z, ldj), _ = jax.lax.scan(body, (z0, jnp.zeros(z0.shape[:-1])), enc["amort"])
        return z, ldj

    def _push_sylvester(self, amort, z0):
        """The Sylvester forward of :class:`flowjax_thesis.bijectors.Sylvester` (same
        parameterisation: ``tanh`` diagonals, strictly upper-triangular rest), with the ``K``
        orthogonal matrices of an example built in one batched call before the layer loop
        (binding each layer per example under ``scan`` puts ``K`` sequential QR gradients on
        the hot path, ~20x slower on CPU). Triangular flows alternate the identity and the
        reversal permutation between layers as in van den Berg et al."""
        d = z0.shape[-1]
        layer = self.layer
        k = self.num_layers
        if self.name.endswith("orthogonal"):
            q, r = jnp.linalg.qr(amort["q"])  # (K, d, M)
            q = q * jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)[:, None, :]
        elif self.name.endswith("householder"):
            q = jax.vmap(lambda v: layer._q({"v": v}, d))(amort["v"])
        else:
            eye = jnp.eye(d)
            q = jnp.where((jnp.arange(k) % 2 == 1)[:, None, None], eye[::-1], eye)
        m = amort["r1"].shape[-1]
        triu = jnp.triu(jnp.ones((m, m)), 1)
        eye_m = jnp.eye(m)

        def tri(r):
            return r * triu + eye_m * jnp.tanh(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]

        r1, r2 = tri(amort["r1"]), tri(amort["r2"])
        diag = jnp.diagonal(r1, axis1=-2, axis2=-1) * jnp.diagonal(r2, axis1=-2, axis2=-1)

        def body(carry, p):
            z, total = carry
            q_k, r1_k, r2_k, b_k, d_k = p
            h = jnp.tanh((z @ q_k) @ r2_k.T + b_k)
            z = z + (h @ r1_k.T) @ q_k.T
            return (z, total + jnp.sum(jnp.log1p(d_k * (1.0 - h**2)), -1)), None

        init = (z0, jnp.zeros(z0.shape[:-1]))
        (z, ldj), _ = jax.lax.scan(body, init, (q, r1, r2, amort["b"], diag))
        return z, ldj


@dataclass(frozen=True)
class IAF(Gaussian):
    """``K`` IAF layers (MADE, one hidden layer of ``hidden_units``) conditioned on ``h(x)``."""

    name: str = "iaf"
    num_layers: int = 8
    hidden_units: int = 256

    def _chain(self):
        step = Chain((make_layer("iaf", hidden=(self.hidden_units,)), make_layer("reverse")))
        return Repeat(step, self.num_layers)

    def init(self, key, latent: int, hidden: int):
        return self._chain().init(key, (latent,), (hidden,))

    def push(self, gparams, enc, z0):
        ctx = jnp.broadcast_to(enc["h"], z0.shape[:-1] + enc["h"].shape)
        return self._chain().bind(gparams, ctx).forward_and_log_det(z0)


@dataclass(frozen=True)
class RealNVP(Gaussian):
    """``K`` RealNVP steps (two couplings each, tanh MLP with one hidden layer), global params."""

    name: str = "realnvp"
    num_layers: int = 8
    hidden_units: int = 256

    def flow(self, latent):
        return realnvp_flow(latent, 2 * self.num_layers, (self.hidden_units,), "tanh")

    def init(self, key, latent: int, hidden: int):
        return self.flow(latent).init(key)

    def push(self, gparams, enc, z0):
        latent = z0.shape[-1]
        return self.flow(latent).bijector(gparams).forward_and_log_det(z0)


@dataclass(frozen=True)
class Boosted(Gaussian):
    """GBNF posterior: a mixture of ``num_components`` RealNVP components (thesis section 4.5).

    ``gparams`` is a :class:`~flowjax_thesis.models.gbnf.GBNF` params dict (``components``
    stacked on a leading axis, ``log_weights``, ``active``). ``sample_and_log_prob`` draws from
    the mixture of the active components (component ``j ~ Categorical(w)``, then the shared base
    pushed through it) and returns the full mixture density ``log G(z | x)``.
    """

    name: str = "gbnf"
    num_components: int = 4
    num_layers: int = 8
    hidden_units: int = 256

    def gbnf(self, latent):
        from flowjax_thesis.models.gbnf import GBNF, component_flow

        flow = component_flow("realnvp", latent, 2 * self.num_layers, (self.hidden_units,))
        return GBNF(flow, self.num_components)

    def init(self, key, latent: int, hidden: int):
        return self.gbnf(latent).init(key)

    # -- one component ------------------------------------------------------------------------
    def _bijector(self, gparams, j, latent):
        gbnf = self.gbnf(latent)
        p_j = jax.tree.map(lambda a: a[j], gparams["components"])
        return gbnf.flow.bijector(p_j)

    def push_component(self, gparams, j, z0):
        """``f_j(z0)`` and its forward log-determinant (``j`` may be traced)."""
        return self._bijector(gparams, j, z0.shape[-1]).forward_and_log_det(z0)

    def push_all(self, gparams, z0):
        """``(C, n, d)`` samples and ``(C, n)`` log-determinants of every component."""
        idx = jnp.arange(self.num_components)
        return jax.vmap(lambda j: self.push_component(gparams, j, z0))(idx)

    def component_log_probs(self, gparams, enc, z):
        """``log g_j(z | x)`` for every component: ``(C, n)``."""

        def one(j):
            z0, ld = self._bijector(gparams, j, z.shape[-1]).inverse_and_log_det(z)
            return log_normal_diag(z0, enc["mu"], enc["log_var"]) + ld

        return jax.vmap(one)(jnp.arange(self.num_components))

    def mixture_log_prob(self, gparams, enc, z, log_w):
        """``log sum_j w_j g_j(z | x)`` for normalised log-weights ``log_w`` (-inf = excluded)."""
        lp = self.component_log_probs(gparams, enc, z)
        safe = jnp.where(jnp.isfinite(log_w)[:, None], log_w[:, None] + lp, -jnp.inf)
        return jax.nn.logsumexp(safe, axis=0)

    def log_weights(self, gparams, exclude=None):
        """Normalised log-weights of the active components (``exclude`` left out) and whether
        any remain (:meth:`GBNF.mixture_log_weights`)."""
        # the weight logic of GBNF does not depend on the component flow's size
        return self.gbnf(2).mixture_log_weights(gparams, exclude)

    def sample_components(self, gparams, enc, key, n, log_w):
        """``n`` draws from the mixture with log-weights ``log_w``: ``(z, j, z0, log q0)``."""
        k_c, k_z = jax.random.split(key)
        j = jax.random.categorical(k_c, log_w, shape=(n,))
        z0, log_q0 = _base_sample(enc, k_z, n)
        zs, lds = self.push_all(gparams, z0)
        rows = jnp.arange(n)
        return zs[j, rows], j, log_q0 - lds[j, rows]

    def sample_and_log_prob(self, gparams, enc, key, n: int):
        log_w, _ = self.log_weights(gparams)
        z, _, _ = self.sample_components(gparams, enc, key, n, log_w)
        return z, self.mixture_log_prob(gparams, enc, z, log_w)

    def component_elbo_samples(self, gparams, enc, key, n: int):
        log_w, _ = self.log_weights(gparams)
        z, _, log_g = self.sample_components(gparams, enc, key, n, log_w)
        return z, log_g


def make_posterior(
    name: str,
    num_layers: int | None = None,
    hidden_units: int = 256,
    num_components: int = 4,
    num_ortho: int | None = None,
    num_householder: int = 8,
):
    """A posterior by name with the thesis's defaults: K=16 for planar/radial/Sylvester (M=32),
    K=8 for IAF and RealNVP (h=256), C=4 RealNVP components (K=8 each) for GBNF."""
    if name == "gaussian":
        return Gaussian()
    if name in ("planar", "radial") or name.startswith("sylvester_"):
        if name not in POSTERIORS:
            raise ValueError(f"unknown posterior {name!r}; choose one of {POSTERIORS}")
        return Amortized(
            name, num_layers or 16, num_ortho=num_ortho, num_householder=num_householder
        )
    if name == "iaf":
        return IAF(num_layers=num_layers or 8, hidden_units=hidden_units)
    if name == "realnvp":
        return RealNVP(num_layers=num_layers or 8, hidden_units=hidden_units)
    if name == "gbnf":
        return Boosted(
            num_components=num_components, num_layers=num_layers or 8, hidden_units=hidden_units
        )
    raise ValueError(f"unknown posterior {name!r}; choose one of {POSTERIORS}")


def flat_size(shapes: dict) -> int:
    return int(sum(math.prod(s) for s in shapes.values()))
