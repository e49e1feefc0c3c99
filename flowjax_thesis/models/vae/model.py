"""The VAE: gated-conv encoder, posterior (:mod:`.posteriors`), decoder and likelihood; the
negative ELBO and the importance-sampled negative log-likelihood.

Params are a dict ``{"encoder", "head", "decoder", "flow"}``: ``head`` is one dense layer from the
encoder features to ``mu``, the variance (softplus) and the amortised flow parameters; ``flow``
holds the posterior's global parameters (IAF/RealNVP networks, GBNF components and weights).

Estimators (nats per example; lower is better):

- ``-ELBO = E_q[-log p(x|z) - log p(z) + log q(z|x)]``. For GBNF the thesis reports eq. 2.9 with
  each draw's own component density ``g_j`` (the "component" -ELBO, an average of component
  ELBOs); :meth:`VAE.evaluate` reports that and the -ELBO of the full mixture ``G``.
- ``NLL = -log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x)``, ``z_s ~ q`` (for GBNF the proposal is
  the full mixture), computed in one jitted call: ``lax.map`` over chunks of the data, and within
  them over chunks of samples (each chunk vmapped), then one ``logsumexp``. In expectation
  ``NLL <= -ELBO`` and it decreases to ``-log p(x)`` as ``S`` grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.models.vae.likelihoods import (
    log_likelihood,
    log_standard_normal,
    out_channels,
)
from flowjax_thesis.models.vae.networks import Decoder, Encoder, check_image_shape
from flowjax_thesis.models.vae.posteriors import Boosted, Gaussian, flat_size


@dataclass(frozen=True)
class VAE:
    image_shape: tuple[int, int, int]
    posterior: Gaussian = Gaussian()
    latent: int = 64
    likelihood: str = "bernoulli"
    hidden: int = 256
    widths: tuple[int, int] = (16, 32)

    def __post_init__(self):
        object.__setattr__(self, "image_shape", check_image_shape(self.image_shape))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        out_channels(self.likelihood, 1)  # validates the name
        if self.latent < 2:
            raise ValueError(f"latent must be >= 2, got {self.latent}")

    # -- modules ------------------------------------------------------------------------------
    @property
    def encoder(self):
        return Encoder(self.image_shape, self.widths, self.hidden)

    @property
    def decoder(self):
        return Decoder(
            self.image_shape, out_channels(self.likelihood, self.image_shape[-1]), self.widths
        )

    @property
    def amortized_shapes(self):
        return self.posterior.amortized_shapes(self.latent, self.hidden)

    @property
    def posterior_flow(self):
        """The posterior's :class:`~flowjax_thesis.flows.Flow` (for GBNF: one component)."""
        return self.posterior.flow(self.latent, self.hidden)

    @property
    def head(self):
        return nn.Dense(2 * self.latent + flat_size(self.amortized_shapes))

    def init(self, key) -> dict:
        k_e, k_h, k_d, k_f = jax.random.split(key, 4)
        x = jnp.zeros((1,) + self.image_shape)
        return {
            "encoder": self.encoder.init(k_e, x),
            "head": self.head.init(k_h, jnp.zeros((1, self.hidden))),
            "decoder": self.decoder.init(k_d, jnp.zeros((1, self.latent))),
            "flow": self.posterior.init(k_f, self.latent, self.hidden),
        }

    # -- encode / decode ----------------------------------------------------------------------
    def check_images(self, x):
        x = jnp.asarray(x)
        if x.shape[-3:] != self.image_shape:
            raise ValueError(
                f"expected images of shape (batch, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return x

    def encode(self, params, x) -> dict:
        """Batched encoder outputs: ``mu``, ``log_var`` (B, d), ``h`` (B, hidden), ``amort`` (the
        amortised Flow params, a pytree with leading ``B``; None if not amortised)."""
        x = self.check_images(x)
        h = self.encoder.apply(params["encoder"], x)
        out = self.head.apply(params["head"], h)
        d = self.latent
        mu, raw = out[..., :d], out[..., d : 2 * d]
        log_var = jnp.log(jax.nn.softplus(raw) + 1e-4)
        leaves, treedef = jax.tree.flatten(self.amortized_shapes)
        parts, start = [], 2 * d
        for leaf in leaves:
            size = math.prod(leaf.shape)
            parts.append(out[..., start : start + size].reshape(out.shape[:-1] + leaf.shape))
            start += size
        amort = jax.tree.unflatten(treedef, parts) if leaves else None
        return {"mu": mu, "log_var": log_var, "h": h, "amort": amort}

    def log_lik(self, params, x, z):
        """``log p(x | z)`` for images ``x`` (batch + image) and latents ``z`` (batch' + (d,))
        whose batch dims broadcast against ``x``'s."""
        out = self.decoder.apply(params["decoder"], z)
        return log_likelihood(self.likelihood, out, x)

    def decode_mean(self, params, z):
        """Expected image under the decoder (reconstructions, samples)."""
        out = self.decoder.apply(params["decoder"], z)
        if self.likelihood == "bernoulli":
            return jax.nn.sigmoid(out)
        if self.likelihood == "categorical256":
            logits = out.reshape(out.shape[:-1] + (self.image_shape[-1], 256))
            return jnp.sum(jax.nn.softmax(logits) * jnp.linspace(0, 1, 256), -1)
        return jax.nn.sigmoid(jnp.split(out, 2, axis=-1)[0])

    # -- samples from q for a batch -----------------------------------------------------------
    def sample_posterior(self, params, enc, key, n: int, component_convention: bool = False):
        """``(z (B, n, d), log q (B, n))`` for every example of a batch (``enc`` from
        :meth:`encode`). For GBNF ``log q`` is the mixture density ``log G(z | x)``, or with
        ``component_convention`` each draw's own component density ``log g_j(z | x)``."""
        keys = jax.random.split(key, enc["mu"].shape[0])
        post, gp = self.posterior, params["flow"]
        ctx = post.context(enc)
        if isinstance(post, Boosted):
            gbnf = post.gbnf(self.latent)
            log_w, _ = gbnf.mixture_log_weights(gp)

            def one(c, k):
                if not component_convention:
                    return gbnf.sample_and_log_prob(gp, k, n, context=c)
                z, _, log_g = post.draw(self.latent, gp, c, k, n, log_w)
                return z, log_g

            return jax.vmap(one)(ctx, keys)
        flow = self.posterior_flow

        def one(c, a, k):
            return flow.sample_and_log_prob(post.flow_params(gp, a), k, n, context=c)

        return jax.vmap(one)(ctx, enc["amort"], keys)

    def log_weights(self, params, x, key, n: int, component_convention: bool = False):
        """``log p(x|z) + log p(z) - log q(z|x)`` for ``n`` draws per example: ``(B, n)``."""
        enc = self.encode(params, x)
        z, log_q = self.sample_posterior(params, enc, key, n, component_convention)
        return self.log_lik(params, x[:, None], z) + log_standard_normal(z) - log_q

    def neg_elbo(self, params, x, key, beta=1.0, n: int = 1):
        """Mean ``-log p(x|z) + beta (log q(z|x) - log p(z))`` over the batch and ``n`` draws,
        and its parts (reconstruction, KL) for logging."""
        enc = self.encode(params, x)
        z, log_q = self.sample_posterior(params, enc, key, n)
        rec = -self.log_lik(params, x[:, None], z)
        kl = log_q - log_standard_normal(z)
        return jnp.mean(rec + beta * kl), {"reconstruction": jnp.mean(rec), "kl": jnp.mean(kl)}

    # -- evaluation ---------------------------------------------------------------------------
    def importance_nll(
        self, params, x, key, num_samples: int = 2000, sample_chunk: int = 100, data_chunk=50
    ):
        """Per-example NLL by importance sampling (one jitted, chunked call)."""
        x = self.check_images(x)
        return _model_importance_nll(
            self, params, x, key, num_samples, sample_chunk, data_chunk, False
        )

    def evaluate(
        self,
        params,
        x,
        key,
        num_samples: int = 2000,
        elbo_samples: int | None = None,
        sample_chunk: int = 100,
        data_chunk: int = 50,
    ) -> dict:
        """Test-set means (nats): ``neg_elbo`` (thesis convention; for GBNF each draw's own
        component, ``3C`` draws), ``neg_elbo_mixture`` (with ``log q``; same as ``neg_elbo``
        for single flows), ``nll`` (importance sampling with ``num_samples``)."""
        k_e, k_n = jax.random.split(key)
        c = getattr(self.posterior, "num_components", 1)
        x = self.check_images(x)
        nll, neg_elbo_mix = _model_importance_nll(
            self, params, x, k_n, num_samples, sample_chunk, data_chunk, True
        )
        neg_elbo_mix = float(jnp.mean(neg_elbo_mix))
        if c > 1:  # a mixture: the thesis's -ELBO uses each draw's own component, 3C draws
            neg_elbo = float(_elbo_means(self, params, x, k_e, elbo_samples or 3 * c, data_chunk))
        else:  # the same quantity as the mean IS log-weight (num_samples draws per example)
            neg_elbo = neg_elbo_mix
        return {"neg_elbo": neg_elbo, "neg_elbo_mixture": neg_elbo_mix, "nll": float(jnp.mean(nll))}


def _pad_chunks(x, chunk):
    n = x.shape[0]
    chunk = max(1, min(chunk, n))
    m = -(-n // chunk)
    pad = m * chunk - n
    xp = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)], 0) if pad else x
    return xp.reshape((m, chunk) + x.shape[1:]), n


def importance_nll(
    encode: Callable,
    sample_and_log_prob: Callable,
    log_lik: Callable,
    x,
    key,
    num_samples: int,
    sample_chunk: int = 100,
    data_chunk: int = 50,
    with_elbo: bool = False,
):
    """``-log (1/S) sum_s exp(log p(x|z_s) + log N(z_s; 0, I) - log q(z_s|x))`` per example.

    ``encode(x_chunk) -> enc`` (batched pytree), ``sample_and_log_prob(enc_i, key, n) -> (z (n,
    d), log q (n,))`` for one example, ``log_lik(x_chunk, z (b, n, d)) -> (b, n)``. The prior is
    always :func:`log_standard_normal` (the same function the VAE trains with). ``lax.map`` over
    data chunks and sample chunks keeps memory at ``data_chunk * sample_chunk`` decoder calls.
    With ``with_elbo`` also returns the per-example ``-mean(log w)`` (the -ELBO estimated from
    the same ``S`` draws).
    """
    sample_chunk = max(1, min(sample_chunk, num_samples))
    n_sc = -(-num_samples // sample_chunk)
    xs, n = _pad_chunks(jnp.asarray(x), data_chunk)
    keys = jax.random.split(key, xs.shape[0])

    def per_data_chunk(args):
        xc, kc = args
        enc = encode(xc)

        def per_sample_chunk(k):
            ks = jax.random.split(k, xc.shape[0])
            z, log_q = jax.vmap(lambda e, kk: sample_and_log_prob(e, kk, sample_chunk))(enc, ks)
            return log_lik(xc, z) + log_standard_normal(z) - log_q  # (b, sc)

        w = jax.lax.map(per_sample_chunk, jax.random.split(kc, n_sc))  # (n_sc, b, sc)
        w = jnp.moveaxis(w, 0, 1).reshape(xc.shape[0], -1)[:, :num_samples]
        return -(jax.nn.logsumexp(w, axis=1) - math.log(num_samples)), -jnp.mean(w, axis=1)

    nll, neg_elbo = jax.lax.map(per_data_chunk, (xs, keys))
    if with_elbo:
        return nll.reshape(-1)[:n], neg_elbo.reshape(-1)[:n]
    return nll.reshape(-1)[:n]


@partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _model_importance_nll(
    model: VAE, params, x, key, num_samples, sample_chunk, data_chunk, with_elbo
):
    enc_fn = lambda xc: model.encode(params, xc)

    def sample_fn(enc, k, n):  # one example: a batch axis of 1 for sample_posterior
        z, log_q = model.sample_posterior(params, jax.tree.map(lambda a: a[None], enc), k, n)
        return z[0], log_q[0]

    lik_fn = lambda xc, z: model.log_lik(params, xc[:, None], z)
    return importance_nll(
        enc_fn, sample_fn, lik_fn, x, key, num_samples, sample_chunk, data_chunk, with_elbo
    )


@partial(jax.jit, static_argnums=(0, 4, 5))
def _elbo_means(model: VAE, params, x, key, n: int, data_chunk: int):
    """Mean over ``x`` of the thesis's -ELBO of a mixture posterior, chunked over the data."""
    xs, size = _pad_chunks(jnp.asarray(x), data_chunk)
    keys = jax.random.split(key, xs.shape[0])

    def one(args):
        xc, kc = args
        return -jnp.mean(model.log_weights(params, xc, kc, n, component_convention=True), 1)

    comp = jax.lax.map(one, (xs, keys))
    return jnp.mean(comp.reshape(-1)[:size])


def bits_per_dim(nats, num_dims: int):
    """Nats per image -> bits per dimension (a discrete likelihood: no dequantisation term)."""
    return np.asarray(nats) / (num_dims * math.log(2.0))
