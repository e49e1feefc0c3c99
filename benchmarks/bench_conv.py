"""Convolutions inside ``lax.scan``: :mod:`flowjax_thesis.nets.patch_conv` beside flax's
``Conv`` / ``ConvTranspose`` (``lax.conv``), on the conv networks the package trains.

For each network, :func:`scan_grad_steps` times ``steps`` gradient steps of a fixed loss under
``lax.scan`` (how the engine trains) with the package's layers (``layers="ours"``) or with the
module's ``Conv`` / ``ConvTranspose`` names pointed back at flax's (``layers="flax"``): the
same parameters (the drop-ins keep flax's names, shapes and initial values), so both sides
start from the same point and take the same SGD steps; each reports the loss it ends at, so
the speed ratio is read at equal answers. Each measurement runs in a fresh process
(:func:`benchmarks.isolated`), one after the other.

Networks (batch 64): ``vae`` the 28x28 gated-conv VAE's encoder and decoder
(:mod:`flowjax_thesis.models.vae.networks`), ``psr`` the PSR flow's conditioning network at 2x
on 28x28 (:class:`flowjax_thesis.models.psr.nets.ImageFeatures`), ``coupling`` the image
couplings' :class:`flowjax_thesis.nets.ConvNet` (width 32, 14x14x2 inputs).
"""

from __future__ import annotations

import os
import time
from typing import Any

NETWORKS = ("vae", "psr", "coupling")


def _use_flax_layers() -> None:
    import flax.linen as nn

    import flowjax_thesis.models.psr.nets as psr_nets
    import flowjax_thesis.models.vae.networks as vae_nets
    import flowjax_thesis.nets.conv as conv_net

    for module in (psr_nets, vae_nets, conv_net):
        for name in ("Conv", "ConvTranspose"):
            if hasattr(module, name):
                setattr(module, name, getattr(nn, name))


def _network(name: str):
    """``(init(key) -> params, loss(params, key) -> scalar)`` for one network."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    if name == "vae":
        from flowjax_thesis.models.vae.networks import Decoder, Encoder

        enc, dec = Encoder((28, 28, 1)), Decoder((28, 28, 1), 1)
        x = (jax.random.uniform(key, (64, 28, 28, 1)) < 0.3).astype(jnp.float32)
        z = jax.random.normal(key, (64, 32))

        def init(k):
            return {"enc": enc.init(k, x), "dec": dec.init(k, z)}

        def loss(p, k):
            h = enc.apply(p["enc"], x)
            logits = dec.apply(p["dec"], z + 0.01 * h[:, :32])
            return jnp.mean(jnp.sum(jax.nn.softplus(logits) - x * logits, axis=(1, 2, 3)))

        return init, loss
    if name == "psr":
        from flowjax_thesis.models.psr.nets import ImageFeatures

        net = ImageFeatures(sizes=((14, 14), (28, 28)))
        x = jax.random.uniform(key, (64, 14, 14, 1))

        def loss(p, k):
            return sum(jnp.mean(jnp.tanh(h) ** 2) for h in net.apply(p, x))

        return (lambda k: net.init(k, x)), loss
    if name == "coupling":
        from flowjax_thesis.nets import ConvNet

        net = ConvNet(width=32, out=4)
        x = jax.random.normal(key, (64, 14, 14, 2))
        target = jax.random.normal(jax.random.PRNGKey(1), (64, 14, 14, 4))

        def init(k):  # perturb the zero-initialised output layer so the loss has a gradient
            p = net.init(k, x)
            return jax.tree.map(lambda a: a + 0.01, p)

        return init, lambda p, k: jnp.mean((net.apply(p, x) - target) ** 2)
    raise ValueError(f"network must be one of {NETWORKS}, got {name!r}")


def scan_grad_steps(
    network: str = "vae", layers: str = "ours", steps: int = 20, chunk: int = 10
) -> dict[str, Any]:
    """``steps`` SGD steps (lr 1e-3) of ``network`` in ``lax.scan`` chunks of ``chunk`` after one
    warm-up chunk; ``layers`` is ``"ours"`` or ``"flax"``."""
    import jax
    import numpy as np

    from benchmarks.peers._common import Stopwatch

    if layers not in ("ours", "flax"):
        raise ValueError(f"layers must be 'ours' or 'flax', got {layers!r}")
    if layers == "flax":
        _use_flax_layers()
    init, loss = _network(network)
    params = init(jax.random.PRNGKey(2))

    @jax.jit
    def run(p):
        def body(p, _):
            value, g = jax.value_and_grad(loss)(p, None)
            return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), value

        return jax.lax.scan(body, p, None, length=int(chunk))

    t0 = time.perf_counter()
    params, values = jax.block_until_ready(run(params))
    warm = time.perf_counter() - t0
    done = 0
    with Stopwatch() as sw:
        while done < int(steps):
            params, values = run(params)
            done += int(chunk)
        jax.block_until_ready(values)
    return {
        "network": network,
        "layers": layers,
        "steps": done,
        "seconds": sw.seconds,
        "cpu_seconds": sw.cpu_seconds,
        "ms_per_step": 1000 * sw.seconds / done,
        "compile_plus_first_chunk_seconds": round(warm, 2),
        "final_loss": float(np.asarray(values)[-1]),
        "load_avg_1min": os.getloadavg()[0],
    }


def compare(networks: str = ",".join(NETWORKS), steps: int = 20, chunk: int = 10) -> dict:
    """Both layer sets per network, each in a fresh process; ``speedup`` is flax's seconds over
    ours (> 1: ours faster), beside the loss each side ends at."""
    from benchmarks import isolated

    out: dict[str, Any] = {
        "benchmark": "conv-in-scan",
        "settings": {"steps": int(steps), "chunk": int(chunk)},
        "networks": {},
    }
    for name in [n for n in str(networks).split(",") if n]:
        kw = dict(network=name, steps=int(steps), chunk=int(chunk))
        ours = isolated("benchmarks.bench_conv:scan_grad_steps", layers="ours", **kw)
        flax = isolated("benchmarks.bench_conv:scan_grad_steps", layers="flax", **kw)
        row: dict[str, Any] = {"ours": ours, "flax": flax}
        if "error" not in ours and "error" not in flax:
            row["speedup"] = round(flax["seconds"] / ours["seconds"], 2)
            row["final_loss"] = {"ours": ours["final_loss"], "flax": flax["final_loss"]}
        out["networks"][name] = row
    return out
