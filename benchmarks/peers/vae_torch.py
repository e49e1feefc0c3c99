"""The thesis's gated-conv VAE on MNIST in PyTorch: the peer of ``bench vae`` (issue 15 item 6).

The same model as ``flowjax_thesis.models.vae`` (nothing here imports it):

- encoder: ``GatedConv(1->16, k5, s2, p2) -> GatedConv(16->32, k5, s2, p2) -> GatedConv(32->256,
  k7, p0)``, each ``a * sigmoid(g)`` of one convolution with twice the channels, giving 256
  features ``h``; one linear head to ``mu``, the raw variance (``log_var = log(softplus(raw) +
  1e-4)``);
- decoder: ``z`` as a 1x1 image ``-> GatedConvT(d->32, k7) -> GatedConvT(32->16, k5, s2) ->
  GatedConvT(16->16, k5, s2) -> Conv(16->1, 1x1)``, Bernoulli logits;
- posteriors: ``gaussian`` (the plain VAE) or ``iaf``: ``K`` steps, each a MADE (one hidden
  layer of ``hidden_units`` ReLU units, the encoder features added to the hidden layer through a
  bias-free linear map, zero-initialised outputs ``(shift, raw)``) with ``z <- z exp(a) + shift``,
  ``a = 2 tanh(raw / 2)``, then a reversal of the coordinates;
- training: the negative ELBO with one draw, the KL weight annealed linearly from 0 to 1 over
  ``anneal_steps``, Adam (lr 1e-3) after clipping the gradient norm to 100; batches drawn i.i.d.
  from the first 50,000 training images, binarised afresh at every step (dynamic binarisation).

:func:`torch_vae` times ``steps`` training steps after ``warmup`` steps and evaluates the
-ELBO (one draw per image, ``beta = 1``) on the first ``eval_n`` test images, binarised once with
``numpy.random.default_rng(0)`` as the package's MNIST loader does, so the answer each side
reaches after the same number of steps is read beside the speed ratio.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.peers._common import Stopwatch, check_steps, require, result, setup_torch, version

POSTERIORS = ("gaussian", "iaf")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def load_mnist(data_path: str, n_train: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """``(train grey levels in [0, 1], test binarised once)``, both ``(N, 1, 28, 28)`` float32,
    from the ``.npz`` cache of ``flowjax-thesis data get mnist`` (keys ``x_train``, ``x_test``)."""
    with np.load(data_path) as f:
        train = f["x_train"].astype(np.float32)[:n_train, ..., None] / 255.0
        test = f["x_test"].astype(np.float32)[..., None] / 255.0
    rng = np.random.default_rng(0)  # the package's fixed binarisation of the test images
    test = (rng.uniform(size=test.shape) < test).astype(np.float32)
    return train.transpose(0, 3, 1, 2).copy(), test.transpose(0, 3, 1, 2).copy()


def made_masks(dim: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """MADE masks ``(out, in)`` for torch's ``Linear``: input degrees ``1..D``, hidden degrees
    cycling through ``1..D-1``, output ``i`` sees inputs ``< i`` only."""
    d_in = np.arange(1, dim + 1)
    d_hid = np.arange(hidden) % max(dim - 1, 1) + 1
    m1 = (d_hid[:, None] >= d_in[None, :]).astype(np.float32)
    m2 = (d_in[:, None] > d_hid[None, :]).astype(np.float32)
    return m1, m2


def build(posterior: str, latent: int, hidden_units: int, iaf_layers: int) -> Any:
    """The VAE as a ``torch.nn.Module`` with ``neg_elbo(x, beta) -> (loss, rec, kl)``."""
    torch = require("torch")
    nn = torch.nn
    functional = torch.nn.functional
    if posterior not in POSTERIORS:
        raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")

    class GatedConv(nn.Module):
        def __init__(self, cin, cout, k, stride=1, padding=0, transpose=False, out_pad=0):
            super().__init__()
            if transpose:
                self.conv = nn.ConvTranspose2d(cin, 2 * cout, k, stride, padding, out_pad)
            else:
                self.conv = nn.Conv2d(cin, 2 * cout, k, stride, padding)

        def forward(self, x):
            a, g = self.conv(x).chunk(2, dim=1)
            return a * torch.sigmoid(g)

    class MaskedLinear(nn.Linear):
        def __init__(self, cin, cout, mask, zero=False):
            super().__init__(cin, cout)
            self.register_buffer("mask", torch.from_numpy(mask))
            if zero:
                nn.init.zeros_(self.weight)
                nn.init.zeros_(self.bias)

        def forward(self, x):
            return functional.linear(x, self.weight * self.mask, self.bias)

    class IAFStep(nn.Module):
        def __init__(self, dim, hidden, context):
            super().__init__()
            m1, m2 = made_masks(dim, hidden)
            self.dim = dim
            self.hidden = MaskedLinear(dim, hidden, m1)
            self.context = nn.Linear(context, hidden, bias=False)
            self.out = MaskedLinear(hidden, 2 * dim, np.concatenate([m2, m2], 0), zero=True)

        def forward(self, z, h):
            hid = torch.relu(self.hidden(z) + self.context(h))
            shift, raw = self.out(hid).split(self.dim, dim=-1)
            a = 2.0 * torch.tanh(raw / 2.0)
            return (z * torch.exp(a) + shift).flip(-1), a.sum(-1)

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                GatedConv(1, 16, 5, 2, 2),
                GatedConv(16, 32, 5, 2, 2),
                GatedConv(32, 256, 7),
                nn.Flatten(),
            )
            self.head = nn.Linear(256, 2 * latent)
            self.decoder = nn.Sequential(
                nn.Unflatten(1, (latent, 1, 1)),
                GatedConv(latent, 32, 7, transpose=True),
                GatedConv(32, 16, 5, 2, 2, transpose=True, out_pad=1),
                GatedConv(16, 16, 5, 2, 2, transpose=True, out_pad=1),
                nn.Conv2d(16, 1, 1),
            )
            layers = iaf_layers if posterior == "iaf" else 0
            self.flow = nn.ModuleList(IAFStep(latent, hidden_units, 256) for _ in range(layers))

        def neg_elbo(self, x, beta):
            h = self.encoder(x)
            mu, raw = self.head(h).chunk(2, dim=-1)
            log_var = torch.log(functional.softplus(raw) + 1e-4)
            eps = torch.randn_like(mu)
            z = mu + torch.exp(0.5 * log_var) * eps
            log_q = torch.sum(-0.5 * eps**2 - 0.5 * log_var - _HALF_LOG_2PI, -1)
            for step in self.flow:
                z, log_det = step(z, h)
                log_q = log_q - log_det
            logits = self.decoder(z)
            rec = functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
            rec = rec.sum((1, 2, 3))
            kl = log_q - torch.sum(-0.5 * z**2 - _HALF_LOG_2PI, -1)
            return torch.mean(rec + beta * kl), rec, kl

    return VAE()


def torch_vae(
    posterior: str = "gaussian",
    data_path: str = "",
    steps: int = 100,
    warmup: int = 20,
    batch: int = 64,
    latent: int = 32,
    hidden_units: int = 256,
    iaf_layers: int = 8,
    anneal_steps: int | None = None,
    lr: float = 1e-3,
    eval_n: int = 10_000,
    eval_chunk: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Steps/s of the PyTorch VAE (eager, ``torch.set_num_threads`` as in ``_common``) and its
    test -ELBO after ``warmup + steps`` steps (``anneal_steps`` defaults to ``steps // 4``)."""
    check_steps(steps, warmup)
    if not data_path:
        raise ValueError("data_path: expected the MNIST .npz of `flowjax-thesis data get mnist`")
    torch = setup_torch(seed)
    train_np, test_np = load_mnist(data_path)
    train, test = torch.from_numpy(train_np), torch.from_numpy(test_np)
    model = build(posterior, latent, hidden_units, iaf_layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    anneal = steps // 4 if anneal_steps is None else int(anneal_steps)
    gen = torch.Generator().manual_seed(seed)

    def one_step(i):
        idx = torch.randint(0, train.shape[0], (batch,), generator=gen)
        x = torch.bernoulli(train[idx], generator=gen)
        beta = min(1.0, i / anneal) if anneal > 0 else 1.0
        opt.zero_grad(set_to_none=True)
        loss, _, _ = model.neg_elbo(x, beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        return loss

    with Stopwatch() as warm:
        for i in range(warmup):
            one_step(i)
    with Stopwatch() as sw:
        for i in range(warmup, warmup + steps):
            loss = one_step(i)
        final = float(loss.detach())
    with torch.no_grad():
        parts = [
            model.neg_elbo(test[s : s + eval_chunk], 1.0)[1:]
            for s in range(0, min(eval_n, len(test)), eval_chunk)
        ]
        neg_elbo = float(torch.cat([r + k for r, k in parts]).mean())
    return result(
        f"torch_vae_{posterior}",
        version("torch"),
        steps,
        sw,
        warm.seconds,
        final,
        posterior=posterior,
        batch=batch,
        latent=latent,
        warmup=warmup,
        trained_steps=warmup + steps,
        test_neg_elbo=neg_elbo,
        eval_n=min(eval_n, len(test)),
        num_parameters=int(sum(p.numel() for p in model.parameters())),
    )
