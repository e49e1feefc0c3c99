"""VAE speed (issue 5): one training step of each posterior at batch 64, in steps/s, and the
importance-sampled NLL of a test set in one jitted, chunked call.

Timing excludes compilation (reported as ``compile_seconds``) and uses the engine's runners:
``mode="scan"`` (default) the chunked runner (``lax.scan`` over ``chunk`` steps per host call),
``mode="step"`` one jitted step per host call (what ``fit(mode="step")`` runs).
Data: scikit-learn's 8x8 digits (binarised), the offline stand-in of the thesis's data sets.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from flowjax_thesis.data.binary_images import load_binary_images
from flowjax_thesis.models.vae import VAE, make_posterior
from flowjax_thesis.models.vae.boosting import boost_transition
from flowjax_thesis.models.vae.posteriors import POSTERIORS
from flowjax_thesis.models.vae.training import vae_transition
from flowjax_thesis.train.fit import make_chunk_runner, make_step_runner


def _model(name, image_shape, latent, hidden_units, components):
    post = make_posterior(name, hidden_units=hidden_units, num_components=components)
    return VAE(image_shape, post, latent=latent)


def _time_steps(model, name, train, batch, steps, chunk, seed, mode="scan"):
    params = model.init(jax.random.PRNGKey(seed))
    if name == "gbnf":  # the last boosting stage: every other component fixed
        gbnf = model.posterior.gbnf(model.latent)
        flow = params["flow"]
        for j in range(gbnf.num_components - 1):
            flow = gbnf.assign_weight(flow, j, 1.0 / (j + 1))
        params = {**params, "flow": flow}
        transition = boost_transition(model, 1e-3)
        state = transition.init(params, gbnf.num_components - 1, steps, steps // 4, 0.5)
    else:
        transition = vae_transition(model, 1e-3, steps // 4)
        state = transition.init(params)
    key = np.asarray(jax.random.PRNGKey(seed))
    if mode == "scan":
        runner = make_chunk_runner(transition, batch, len(train))
    else:  # chunk single jitted steps from the host
        one = make_step_runner(transition, batch, len(train), None, True)

        def runner(state, data, key, start, n):
            for s in range(int(start), int(start) + n):
                state, metrics, finite = one(state, data, key, np.int32(s), None)
            return state, {k: v[None] for k, v in metrics.items()}, finite

    t0 = time.perf_counter()
    state, _, _ = runner(state, train, key, np.int32(0), chunk)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    done = 0
    t0 = time.perf_counter()
    while done < steps:
        state, metrics, _ = runner(state, train, key, np.int32(chunk + done), chunk)
        done += chunk
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - t0
    return state.params, {
        "steps_per_second": done / seconds,
        "compile_seconds": round(compile_s, 2),
        "steps": done,
        "final_loss": float(np.asarray(metrics["loss"])[-1]),
    }


def vae_steps(
    posteriors: tuple[str, ...] | list[str] = POSTERIORS,
    steps: int = 100,
    chunk: int = 50,
    batch: int = 64,
    latent: int = 64,
    hidden_units: int = 256,
    components: int = 4,
    is_samples: int = 1000,
    sample_chunk: int = 100,
    data_chunk: int = 50,
    seed: int = 0,
    mode: str = "scan",
) -> dict[str, Any]:
    """Steps/s of one training step per posterior (batch 64, d=64, thesis sizes: K=16 planar/
    radial/Sylvester with M=32, K=8 IAF/RealNVP with h=256, GBNF C=4 in its last stage), and
    the seconds of one jitted call computing the IS-NLL of the 200 test images."""
    data = load_binary_images("digits")
    train = jax.numpy.asarray(data.train)
    out: dict[str, Any] = {
        "data": data.source,
        "batch": batch,
        "latent": latent,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "mode": mode,
        "posteriors": {},
    }
    for name in posteriors:
        model = _model(name, data.image_shape, latent, hidden_units, components)
        params, res = _time_steps(model, name, train, batch, steps, chunk, seed, mode)
        key = jax.random.PRNGKey(seed + 1)
        t0 = time.perf_counter()
        nll = model.importance_nll(params, data.test, key, is_samples, sample_chunk, data_chunk)
        jax.block_until_ready(nll)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        nll = model.importance_nll(params, data.test, key, is_samples, sample_chunk, data_chunk)
        jax.block_until_ready(nll)
        res["is_nll"] = {
            "num_test": len(data.test),
            "num_samples": is_samples,
            "seconds": round(time.perf_counter() - t0, 3),
            "compile_plus_run_seconds": round(first, 2),
            "nll_nats": float(np.mean(np.asarray(nll))),
        }
        out["posteriors"][name] = res
    return out


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    kwargs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps(vae_steps(**kwargs), indent=2))
