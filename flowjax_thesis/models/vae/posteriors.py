"""Variational posteriors ``q(z | x)`` for the VAE, each a :class:`~flowjax_thesis.flows.Flow`:
the encoder's diagonal Gaussian ``q0(z0 | x) = N(mu(x), diag(var(x)))`` as the Flow's base (a
function of the context, :func:`diag_normal`) pushed through ``z_K = f_K o ... o f_1(z0)``, so
``log q(z_K | x) = log q0(z0 | x) - sum_k log|det df_k/dz_{k-1}|`` (thesis eq. 2.9).

Families (:func:`make_posterior`); ``spec.flow(latent, hidden)`` builds the Flow:

- ``gaussian``: no flow (the plain VAE; one identity layer).
- ``planar``, ``radial``, ``sylvester_orthogonal`` / ``_householder`` / ``_triangular``: ``K``
  layers whose parameters the encoder emits per data point (amortised, as in Rezende & Mohamed
  and van den Berg et al.): the Flow's params are the encoder head's outputs, and each example
  binds its own bijectors under ``vmap`` (``amortized = True``). Sylvester flows use
  :class:`~.sylvester_stack.SylvesterStack` (the ``K`` orthogonal matrices in one batched call)
  unless ``batched=False`` (``Repeat`` of the foundation layer: the same map, slower).
- ``iaf``: ``K`` MADE autoregressive layers (one hidden layer of ``h`` units) with reversals in
  between, conditioned on the encoder features ``h(x)`` (``layer_context``; Kingma et al., 2016).
- ``realnvp``: ``K`` RealNVP steps, each two affine couplings (one per half) with one tanh hidden
  layer of ``h`` units, global (not amortised) parameters, as in the original code.
- ``gbnf``: a :class:`~flowjax_thesis.models.gbnf.GBNF` mixture of ``C`` such RealNVP Flows
  (stacked component params, log-space weights), all sharing the amortised Gaussian base;
  ``log G(z | x) = logsumexp_j(log w_j + log q0(f_j^{-1}(z) | x) + log|det df_j^{-1}/dz|)``.

The context of one example is ``{"mu": (d,), "log_var": (d,)}`` (plus ``"h": (hidden,)`` for
IAF); the VAE binds it (and, for amortised flows, the params) per example under ``vmap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import distrax
import jax
import jax.numpy as jnp

from flowjax_thesis.bijectors import Chain, Layer, Repeat, make_layer
from flowjax_thesis.flows import Flow, realnvp_flow
from flowjax_thesis.models.vae.sylvester_stack import SylvesterStack

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


def diag_normal(context) -> distrax.MultivariateNormalDiag:
    """The amortised base ``N(mu(x), diag(exp(log_var(x))))`` of a posterior Flow."""
    return distrax.MultivariateNormalDiag(context["mu"], jnp.exp(0.5 * context["log_var"]))


def encoder_features(context):
    """What IAF layers are conditioned on: the encoder features ``h(x)``."""
    return context["h"]


def no_layer_context(context):
    """The layers of the other posteriors see no context (RealNVP's couplings could take one)."""
    return None


@dataclass(frozen=True)
class Identity(Layer):
    """The identity map (the plain VAE's posterior is its base alone)."""

    def init(self, key, event_shape, context_shape=None):
        return {}

    def bind(self, params, context=None):
        return distrax.Block(distrax.ScalarAffine(0.0, 1.0), 1)


@dataclass(frozen=True)
class Gaussian:
    """The plain VAE posterior ``N(mu(x), diag(var(x)))``."""

    name: str = "gaussian"
    #: the Flow's params come from the encoder head, one set per example
    amortized = False

    def layers(self, latent: int) -> tuple[Layer, ...]:
        return (Identity(),)

    def context_shape(self, latent: int, hidden: int) -> dict:
        return {"mu": (latent,), "log_var": (latent,)}

    def flow(self, latent: int, hidden: int) -> Flow:
        return Flow(
            self.layers(latent),
            (latent,),
            self.context_shape(latent, hidden),
            base=diag_normal,
            layer_context=no_layer_context,
        )

    def context(self, enc) -> dict:
        """The Flow's context from the encoder outputs (batched or one example)."""
        return {k: enc[k] for k in self.context_shape(1, 1)}

    def init(self, key, latent: int, hidden: int):
        """Global (not amortised) params of the posterior."""
        return {} if self.amortized else self.flow(latent, hidden).init(key)

    def amortized_shapes(self, latent: int, hidden: int = 1):
        """The params pytree (of ``ShapeDtypeStruct``) the encoder head emits per example
        (None when the posterior is not amortised)."""
        if not self.amortized:
            return None
        return jax.eval_shape(self.flow(latent, hidden).init, jax.random.PRNGKey(0))

    def flow_params(self, gparams, amort):
        """The Flow's params for one example."""
        return amort if self.amortized else gparams

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
    batched: bool = True  # Sylvester: SylvesterStack (fast) rather than Repeat(Sylvester)
    amortized = True

    def layers(self, latent: int) -> tuple[Layer, ...]:
        if self.name.startswith("sylvester_"):
            kind = self.name.removeprefix("sylvester_")
            stack = SylvesterStack(kind, self.num_layers, self.num_ortho, self.num_householder)
            if kind == "orthogonal":
                m = min(latent, 32) if self.num_ortho is None else self.num_ortho
                if not 1 <= m <= latent:
                    raise ValueError(f"num_ortho must be in [1, {latent}], got {self.num_ortho}")
            if self.batched:
                return (stack,)
            if kind == "triangular":  # alternate Q = I and the reversal, as the stack does
                pair = Chain((stack.layer(1), stack.layer(0)))
                rest = (stack.layer(0),) if self.num_layers % 2 else ()
                return rest + ((Repeat(pair, self.num_layers // 2),) if self.num_layers > 1 else ())
            return (Repeat(stack.layer(), self.num_layers),)
        return (Repeat(make_layer(self.name), self.num_layers),)


@dataclass(frozen=True)
class IAF(Gaussian):
    """``K`` IAF layers (MADE, one hidden layer of ``hidden_units``) conditioned on ``h(x)``."""

    name: str = "iaf"
    num_layers: int = 8
    hidden_units: int = 256

    def layers(self, latent: int) -> tuple[Layer, ...]:
        step = Chain((make_layer("iaf", hidden=(self.hidden_units,)), make_layer("reverse")))
        return (Repeat(step, self.num_layers),)

    def context_shape(self, latent: int, hidden: int) -> dict:
        return {"mu": (latent,), "log_var": (latent,), "h": (hidden,)}

    def flow(self, latent: int, hidden: int) -> Flow:
        return Flow(
            self.layers(latent),
            (latent,),
            self.context_shape(latent, hidden),
            base=diag_normal,
            layer_context=encoder_features,
        )


@dataclass(frozen=True)
class RealNVP(Gaussian):
    """``K`` RealNVP steps (two couplings each, tanh MLP with one hidden layer), global params."""

    name: str = "realnvp"
    num_layers: int = 8
    hidden_units: int = 256

    def layers(self, latent: int) -> tuple[Layer, ...]:
        return realnvp_flow(latent, 2 * self.num_layers, (self.hidden_units,), "tanh").layers


@dataclass(frozen=True)
class Boosted(RealNVP):
    """GBNF posterior: a mixture of ``num_components`` RealNVP posterior Flows (thesis section
    4.5). The global params are a :class:`~flowjax_thesis.models.gbnf.GBNF` params dict
    (``components`` stacked on a leading axis, ``log_weights``, ``active``); ``flow`` is one
    component (with the shared amortised base)."""

    name: str = "gbnf"
    num_components: int = 4  # type: ignore[assignment]

    def gbnf(self, latent: int):
        from flowjax_thesis.models.gbnf import GBNF

        return GBNF(self.flow(latent, 1), self.num_components)

    def init(self, key, latent: int, hidden: int):
        return self.gbnf(latent).init(key)

    def component(self, gparams, j):
        """The Flow params of component ``j`` (may be traced)."""
        return jax.tree.map(lambda a: a[j], gparams["components"])

    def push_all(self, latent, gparams, z0):
        """Every component's image of the base draws ``z0`` and its forward log-determinant:
        ``(C,) + z0.shape`` and ``(C,) + batch``."""
        flow = self.flow(latent, 1)
        return jax.vmap(lambda p: flow.bijector(p).forward_and_log_det(z0))(gparams["components"])

    def draw(self, latent, gparams, context, key, n: int, log_w):
        """``n`` draws of one example from the mixture with log-weights ``log_w`` (components
        chosen ``j ~ Categorical(w)``, one shared base draw pushed through all): ``(z, j, log
        g_j(z | x))`` with each draw's own component density (forward log-determinants)."""
        k_c, k_z = jax.random.split(key)
        j = jax.random.categorical(k_c, log_w, shape=(n,))
        z0, log_q0 = diag_normal(context).sample_and_log_prob(seed=k_z, sample_shape=(n,))
        zs, lds = self.push_all(latent, gparams, z0)
        rows = jnp.arange(n)
        return zs[j, rows], j, log_q0 - lds[j, rows]


def make_posterior(
    name: str,
    num_layers: int | None = None,
    hidden_units: int = 256,
    num_components: int = 4,
    num_ortho: int | None = None,
    num_householder: int = 8,
    batched: bool = True,
):
    """A posterior by name with the thesis's defaults: K=16 for planar/radial/Sylvester (M=32),
    K=8 for IAF and RealNVP (h=256), C=4 RealNVP components (K=8 each) for GBNF."""
    if name not in POSTERIORS:
        raise ValueError(f"unknown posterior {name!r}; choose one of {POSTERIORS}")
    if name == "gaussian":
        return Gaussian()
    if name in ("planar", "radial") or name.startswith("sylvester_"):
        return Amortized(
            name,
            num_layers or 16,
            num_ortho=num_ortho,
            num_householder=num_householder,
            batched=batched,
        )
    if name == "iaf":
        return IAF(num_layers=num_layers or 8, hidden_units=hidden_units)
    if name == "realnvp":
        return RealNVP(num_layers=num_layers or 8, hidden_units=hidden_units)
    return Boosted(
        num_components=num_components, num_layers=num_layers or 8, hidden_units=hidden_units
    )


def flat_size(tree) -> int:
    """Number of numbers in a pytree of arrays or ``ShapeDtypeStruct`` (0 for None)."""
    return int(sum(math.prod(a.shape) for a in jax.tree.leaves(tree)))
