"""VAE speed (issue 5): one training step of each posterior at batch 64, in steps/s, and the
importance-sampled NLL of a test set in one jitted, chunked call; and (issue 15 item 6) the
gated-conv VAE on MNIST beside the same model in PyTorch (:mod:`benchmarks.peers.vae_torch`).

Timing excludes compilation (reported as ``compile_seconds``) and uses the engine's runners:
``mode="scan"`` (default) the chunked runner (``lax.scan`` over ``chunk`` steps per host call),
``mode="step"`` one jitted step per host call (what ``fit(mode="step")`` runs).
Data: :func:`vae_steps` scikit-learn's 8x8 digits (binarised), the offline stand-in of the thesis's
data sets; :func:`compare_torch` MNIST from the cache of ``flowjax-thesis data get mnist``,
dynamically binarised, batches drawn i.i.d. from the 50,000 training images on both sides.

:func:`compare_torch` (what ``flowjax-thesis bench vae`` runs) trains each posterior (``gaussian``
and ``iaf``) for ``chunk`` warm-up steps (ours: compilation plus the first chunk) and ``steps``
timed steps, ours as one ``lax.scan`` of ``chunk`` steps per host call, PyTorch eagerly, each in
a fresh process one after the other, and then evaluates the test -ELBO (one draw per image,
``beta = 1``) of both, so the speed ratio ``ours / torch`` is read beside the answer each side
reaches after the same number of steps. Threads: JAX's CPU backend runs its intra-op thread pool
over every core it may use (``os.sched_getaffinity``), and torch is set to the same count.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np

from benchmarks.ours import time_runner
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

    state, metrics, done, sw, compile_s = time_runner(runner, state, train, key, steps, chunk)
    seconds = sw.seconds
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


def _mnist_model(name, latent, hidden_units, iaf_layers):
    post = make_posterior(
        name, num_layers=iaf_layers if name == "iaf" else None, hidden_units=hidden_units
    )
    return VAE((28, 28, 1), post, latent=latent)


def test_neg_elbo(model, params, x, key, chunk: int = 500) -> float:
    """Mean test -ELBO (one draw per image, ``beta = 1``) over ``x`` in chunks of ``chunk``."""
    f = jax.jit(lambda p, xc, k: model.neg_elbo(p, xc, k, 1.0)[0])
    n = (len(x) // chunk) * chunk or len(x)
    chunk = min(chunk, n)
    keys = jax.random.split(key, n // chunk)
    vals = [float(f(params, x[i * chunk : (i + 1) * chunk], keys[i])) for i in range(n // chunk)]
    return float(np.mean(vals))


def ours_mnist(
    posterior: str = "gaussian",
    steps: int = 100,
    chunk: int = 20,
    batch: int = 64,
    latent: int = 32,
    hidden_units: int = 256,
    iaf_layers: int = 8,
    eval_n: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Our side of :func:`compare_torch`: ``chunk`` warm-up steps (compile + run), ``steps``
    timed steps in chunks of ``chunk`` (the KL weight annealed over the first ``steps // 4``
    steps, as the peer), then the test -ELBO of the first ``eval_n`` test images."""
    from benchmarks.peers._common import result, version

    steps, chunk = int(steps), int(chunk)
    if steps < chunk or steps % chunk:
        raise ValueError(f"steps must be a positive multiple of chunk={chunk}, got {steps}")
    data = load_binary_images("mnist", fallback=False)
    if not data.dynamic_binarization:
        raise ValueError(f"expected the raw MNIST cache (dynamic binarisation), got {data.source}")
    train = jax.numpy.asarray(data.train)
    model = _mnist_model(posterior, int(latent), int(hidden_units), int(iaf_layers))
    params = model.init(jax.random.PRNGKey(seed))
    transition = vae_transition(model, 1e-3, steps // 4, 0.0, True)
    runner = make_chunk_runner(transition, int(batch), len(train))
    state = transition.init(params)
    key = np.asarray(jax.random.PRNGKey(seed))
    state, metrics, _, sw, warm_seconds = time_runner(runner, state, train, key, steps, chunk)
    x_test = jax.numpy.asarray(data.test[: int(eval_n)])
    neg_elbo = test_neg_elbo(model, state.params, x_test, jax.random.PRNGKey(seed + 1))
    return result(
        f"ours_vae_{posterior}",
        version("jax"),
        steps,
        sw,
        warm_seconds,
        float(np.asarray(metrics["loss"])[-1]),
        posterior=posterior,
        batch=int(batch),
        latent=int(latent),
        warmup=chunk,
        trained_steps=chunk + steps,
        test_neg_elbo=neg_elbo,
        eval_n=len(x_test),
        num_parameters=int(sum(np.size(a) for a in jax.tree.leaves(params))),
        jax_threads=len(os.sched_getaffinity(0)),
        data=data.source,
    )


def _compare_rounds(records: list[dict]) -> dict[str, Any]:
    """One posterior's rounds of ``{"ours": record, "torch": record}``: the first round's
    records, each round's seconds and ratio, and the medians (with the ratio's range)."""
    row: dict[str, Any] = {"ours": records[0]["ours"], "torch": records[0]["torch"]}
    done = [r for r in records if "error" not in r["ours"] and "error" not in r["torch"]]
    if not done:
        return row
    row["rounds"] = [
        {
            "ours_seconds": round(r["ours"]["seconds"], 3),
            "torch_seconds": round(r["torch"]["seconds"], 3),
            "speedup_vs_torch": round(r["torch"]["seconds"] / r["ours"]["seconds"], 3),
        }
        for r in done
    ]
    ratios = [r["speedup_vs_torch"] for r in row["rounds"]]
    row["speedup_vs_torch"] = round(float(np.median(ratios)), 3)
    row["speedup_range"] = [min(ratios), max(ratios)]
    row["cpu_ratio"] = round(
        float(np.median([r["torch"]["cpu_seconds"] / r["ours"]["cpu_seconds"] for r in done])), 3
    )
    row["test_neg_elbo"] = {
        side: round(done[0][side]["test_neg_elbo"], 2) for side in ("ours", "torch")
    }
    return row


def compare_torch(
    posteriors: str = "gaussian,iaf",
    steps: int = 100,
    chunk: int = 20,
    batch: int = 64,
    latent: int = 32,
    hidden_units: int = 256,
    iaf_layers: int = 8,
    eval_n: int = 10_000,
    seed: int = 0,
    torch_threads: int | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    """Ours against the PyTorch peer on MNIST, posterior by posterior, each measurement in a
    fresh process (``benchmarks.isolated``). ``torch_threads`` defaults to JAX's thread count.

    ``rounds`` repeats every pair of measurements (the side that goes first alternates), because
    on a shared machine one measurement of either side varies by 20-30% from run to run.
    Returns per posterior the first round's two records, the seconds and ratio of every round
    (``rounds``), ``speedup_vs_torch`` (the median over rounds of our steps/s over theirs; > 1:
    we are faster) with its range, ``cpu_ratio`` (their CPU seconds per step over ours, median),
    and both test -ELBOs (the same seed trains the same model in every round)."""
    from benchmarks import isolated
    from flowjax_thesis.data.fetch import cached_file

    path = cached_file("mnist")
    if path is None:
        raise FileNotFoundError("bench vae needs MNIST: run `flowjax-thesis data get mnist` first")
    threads = (
        len(os.sched_getaffinity(0)) if torch_threads in (None, "", "None") else int(torch_threads)
    )
    kw = dict(
        steps=int(steps),
        batch=int(batch),
        latent=int(latent),
        hidden_units=int(hidden_units),
        iaf_layers=int(iaf_layers),
        eval_n=int(eval_n),
        seed=int(seed),
    )
    rounds = int(rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}")
    out: dict[str, Any] = {
        "benchmark": "vae-mnist-vs-torch",
        "settings": {**kw, "chunk": int(chunk), "torch_threads": threads, "rounds": rounds},
        "posteriors": {},
        "goal": "ours at least as fast as PyTorch (speedup_vs_torch >= 1) at a similar -ELBO",
    }
    old = os.environ.get("FLOWJAX_BENCH_TORCH_THREADS")
    os.environ["FLOWJAX_BENCH_TORCH_THREADS"] = str(threads)
    try:
        names = [p for p in str(posteriors).split(",") if p]
        records: dict[str, list] = {name: [] for name in names}
        sides = {
            "ours": ("benchmarks.bench_vae:ours_mnist", {"chunk": int(chunk)}),
            "torch": (
                "benchmarks.peers.vae_torch:torch_vae",
                {"data_path": path, "warmup": int(chunk)},
            ),
        }
        for r in range(rounds):
            for name in names:
                order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
                records[name].append(
                    {
                        side: isolated(sides[side][0], posterior=name, **sides[side][1], **kw)
                        for side in order
                    }
                )
        for name in names:
            out["posteriors"][name] = _compare_rounds(records[name])
    finally:
        if old is None:
            os.environ.pop("FLOWJAX_BENCH_TORCH_THREADS", None)
        else:
            os.environ["FLOWJAX_BENCH_TORCH_THREADS"] = old
    return out


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    kwargs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps(vae_steps(**kwargs), indent=2))
