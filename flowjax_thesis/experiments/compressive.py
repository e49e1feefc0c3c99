"""Chapter 5 experiments: compressive normalizing flows on images, bits/dim.

- ``compressive-latent-sweep`` (Figure 18): bits/dim against latent size for PPCA, linear-VAE
  and VAE compression after a multi-scale bijective flow; the uncompressed flow is the dashed line.
- ``compressive-architectures`` (Table 10): no compression, PPCA, linear VAE, VAE (bijective
  then compress) and VAE compression intermixed at each scale, at about 94% compression, with
  parameter counts.
- ``compressive-depth`` (Figure 20): bits/dim against the number of bijective steps per scale
  before one compression step at 75% compression (PPCA and VAE).

``data``: ``mnist`` / ``fashion-mnist`` (the cache of ``flowjax-thesis data get``) or
scikit-learn's 8x8 ``digits`` (17 grey levels, D = 64; the default, whose bits/dim are not
comparable with the thesis's MNIST/CIFAR-10 numbers).

**Matched capacity.** A compressed flow carries its compressive step's parameters on top of the
bijective flow, so the uncompressed flow of the same width is also the smaller model. Both
experiments add ``No compression (matched)``: the uncompressed flow whose coupling width gives it
the parameter count of the VAE-compressed model (within 10%,
:func:`~flowjax_thesis.models.compressive.matched_width`), and compare the two in both directions
(``vs_matched``: the relative difference, whether the compressed flow is within 10%, and which
is better). Parameter counts are in every row.

PPCA steps are trained with closed-form mini-batch updates alternating with gradient steps on the
flow (dual-base objective eq. 5.6 while alpha is annealed over ``anneal_steps``, then the exact
eq. 5.5); everything else by gradients
(Adamax with a linear warm-up, as in section 5.5.1.1). Test bits/dim are upper bounds: one
uniform dequantisation draw per image and, for VAE steps, an importance-weighted bound with
``eval_samples`` draws (``test_bpd_elbo`` is the single-sample ELBO).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import jax
import optax

from flowjax_thesis.data.images import load_images
from flowjax_thesis.experiments import register
from flowjax_thesis.models.compressive import capacity_gap, count_params, matched_width, num_params
from flowjax_thesis.models.compressive.images import (
    ImageModel,
    build_flow,
    gradient_training,
    ppca_flow_transition,
)
from flowjax_thesis.train import fit


def _optimizer(cfg):
    warmup = max(1, min(cfg.warmup_steps, cfg.steps // 4))
    schedule = optax.linear_schedule(0.0, cfg.lr, warmup)
    return optax.chain(optax.clip_by_global_norm(100.0), optax.adamax(schedule))


def _build(data, compression, latent_size, cfg, width=None):
    return build_flow(
        data.image_shape,
        compression,
        latent_size,
        steps_per_level=cfg.steps_per_level,
        levels=cfg.levels,
        width=cfg.width if width is None else width,
        vae_hidden=cfg.vae_hidden,
        conv_vae_width=cfg.conv_vae_width,
    )


def train_and_evaluate(
    data, compression: str, latent_size, cfg: CompressiveSettings, run=None, label=None,
    width: int | None = None,
):  # fmt: skip
    """Builds, trains and evaluates one model; returns a dict of results (bits/dim on test).
    ``width`` overrides ``cfg.width`` (the matched-capacity uncompressed flow)."""
    steps_per_level = cfg.steps_per_level
    flow = _build(data, compression, latent_size, cfg, width)
    model = ImageModel(flow, data.num_bins, cfg.dequantization)
    key = jax.random.PRNGKey(cfg.seed)
    k_init, k_fit, k_eval = jax.random.split(key, 3)
    params = model.data_init(model.init(k_init), data.train[:512], k_init)
    if compression == "ppca":
        transition = ppca_flow_transition(model, _optimizer(cfg), anneal_steps=cfg.anneal_steps)
    else:
        transition = gradient_training(model, _optimizer(cfg))
    label = label or f"{compression}_d{latent_size}"
    t0 = time.time()
    result = fit(
        transition,
        transition.init(params),
        data.train,
        key=k_fit,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        chunk_size=min(cfg.steps, 250),
        progress=False,
        run=run,
        tags={"model": label},
    )
    seconds = time.time() - t0
    params = result.state.params
    test = data.test[: cfg.n_test] if cfg.n_test else data.test
    out = {
        "compression": compression,
        "latent_size": flow.latent_size,
        "compression_ratio": round(flow.compression, 4),
        "steps_per_level": steps_per_level,
        "width": cfg.width if width is None else width,
        "num_params": num_params(params),
        "test_bpd": model.evaluate(params, test, k_eval, num_samples=cfg.eval_samples),
        "exact": flow.exact,
        "term_kinds": flow.term_kinds(),
        "train_bpd_last_chunk": result.history[-1].get("bits_per_dim"),
        "train_seconds_incl_compile": round(seconds, 1),
    }
    if not flow.exact and cfg.eval_samples > 1:
        out["test_bpd_elbo"] = model.evaluate(params, test, k_eval, num_samples=1)
    if run is not None:
        run.print(
            f"{label}: test {out['test_bpd']:.4f} bits/dim ({'exact' if flow.exact else 'bound'})"
            f", latent {flow.latent_size}/{math.prod(data.image_shape)}, "
            f"{out['num_params']} params, {seconds:.0f} s"
        )
    return out


def _data(cfg, run):
    data = load_images(cfg.data, seed=cfg.seed)
    run.print(f"data: {data.source}")
    return data


def matched_uncompressed(data, cfg, target_label: str, target_latent: int, run=None) -> dict:
    """Trains the uncompressed flow whose parameter count matches the VAE-compressed model at
    ``target_latent`` (within 10%) and records the match."""
    target = count_params(_build(data, "vae", target_latent, cfg))
    width, _ = matched_width(data.image_shape, target, cfg.levels, cfg.steps_per_level)
    out = train_and_evaluate(data, "none", None, cfg, run, "No compression (matched)", width)
    out["matched_to"] = target_label
    out["matched_to_params"] = target
    out["capacity_gap"] = round(capacity_gap(out["num_params"], target), 4)
    if run is not None:
        run.print(
            f"matched capacity: uncompressed width {width}, {out['num_params']} params vs "
            f"{target} of {target_label} (gap {out['capacity_gap']:.1%})"
        )
    return out


def versus(compressed: dict, uncompressed: dict) -> dict:
    """Both directions of a compressed-vs-uncompressed comparison (bits/dim, lower is
    better), with the parameter counts and their relative gap."""
    c, u = compressed["test_bpd"], uncompressed["test_bpd"]
    rel = (c - u) / u
    return {
        "compressed_bpd": c,
        "uncompressed_bpd": u,
        "relative_difference": round(rel, 4),
        "compressed_within_10pct": bool(abs(rel) <= 0.10),
        "compressed_better": bool(c < u),
        "uncompressed_better": bool(u < c),
        "compressed_params": compressed["num_params"],
        "uncompressed_params": uncompressed["num_params"],
        "capacity_gap": round(
            capacity_gap(compressed["num_params"], uncompressed["num_params"]), 4
        ),
    }


def comparison_summary(data, results: dict, compressed: list, matched: dict, same: dict, run):
    """The summary of a compression experiment: every result, each compressed model against the
    uncompressed flow of matched capacity and of the same width (:func:`versus`, printed), and
    the comparison table."""
    summary = {"data": data.source, "results": results}
    summary["vs_matched"] = {k: versus(results[k], matched) for k in compressed}
    summary["vs_same_width"] = {k: versus(results[k], same) for k in compressed}
    for k, v in summary["vs_matched"].items():
        run.print(
            f"{k} vs matched uncompressed: {v['compressed_bpd']:.4f} vs {v['uncompressed_bpd']:.4f}"
            f" bits/dim ({v['relative_difference']:+.1%}), params {v['compressed_params']:,} vs "
            f"{v['uncompressed_params']:,} (gap {v['capacity_gap']:.1%})"
        )
    summary["comparison"] = [
        {
            "model": k,
            "latent size": r["latent_size"],
            "compression": r["compression_ratio"],
            "bits/dim": r["test_bpd"],
            "exact": r["exact"],
            "params": r["num_params"],
        }
        for k, r in results.items()
    ]
    return summary


@dataclass(frozen=True)
class CompressiveSettings:
    """Settings shared by the compressive-flow experiments (defaults: the smoke profile)."""

    data: str = "digits"
    steps: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 500
    steps_per_level: int = 1
    levels: int = 1
    width: int = 8
    vae_hidden: tuple[int, ...] = (32, 16)
    conv_vae_width: int = 8
    anneal_steps: int = 10
    dequantization: str = "uniform"
    eval_samples: int = 1
    n_test: int = 64
    seed: int = 0


@dataclass(frozen=True)
class CompressiveLatentSweepSettings(CompressiveSettings):
    """Settings of ``compressive-latent-sweep``; the defaults are the smoke profile."""

    latent_sizes: tuple[int, ...] = (16,)
    methods: tuple[str, ...] = ("ppca", "vae")
    matched_latent_size: int = 0  # the VAE model the uncompressed flow is matched to (0: largest)


COMPRESSIVE_LATENT_SWEEP_SMOKE = CompressiveLatentSweepSettings()
# cpu: MNIST (data get mnist) sized for about 20 minutes on the shared 2-core machine: short
# trainings of small models (the VAE step (32, 16) wide, so that the matched uncompressed flow
# stays affordable: conv parameters cost H*W times their count in compute, dense ones once)
COMPRESSIVE_LATENT_SWEEP_CPU = replace(
    COMPRESSIVE_LATENT_SWEEP_SMOKE,
    data="mnist",
    steps=300,
    warmup_steps=100,
    steps_per_level=2,
    levels=2,
    width=16,
    vae_hidden=(32, 16),
    conv_vae_width=16,
    anneal_steps=150,
    eval_samples=4,
    n_test=1000,
    latent_sizes=(12, 49, 196),
    methods=("ppca", "vae"),
)
COMPRESSIVE_LATENT_SWEEP_FULL = replace(
    COMPRESSIVE_LATENT_SWEEP_CPU,
    vae_hidden=(512, 256),
    conv_vae_width=32,
    n_test=0,
    methods=("ppca", "linear_vae", "vae"),
    dequantization="variational",  # thesis 5.5.1.1: variational dequantization
    steps=562_500,
    warmup_steps=5000,
    steps_per_level=8,
    width=128,
    anneal_steps=20000,
    eval_samples=64,
    latent_sizes=(12, 24, 49, 98, 196, 392),
)


@register(
    "compressive-latent-sweep",
    description="Thesis Figure 18: bits/dim vs latent size for PPCA / linear-VAE / VAE "
    "compression after a multi-scale flow (dashed: no compression).",
    paper={
        "figure_18": "MNIST: all models degrade at latent size 12 (98% compression); VAE "
        "compression almost always best; at latent size 98 (88% compression) VAE is nearly "
        "as good as the bijective flow (0.98 bits/dim without compression, Table 10)",
    },
    smoke=COMPRESSIVE_LATENT_SWEEP_SMOKE,
    cpu=COMPRESSIVE_LATENT_SWEEP_CPU,
    full=COMPRESSIVE_LATENT_SWEEP_FULL,
)
def latent_sweep(cfg: CompressiveLatentSweepSettings, run) -> dict:
    data = _data(cfg, run)
    D = math.prod(data.image_shape)
    baseline = train_and_evaluate(data, "none", None, cfg, run, "none")
    results = {"none": baseline}
    target = cfg.matched_latent_size or max(cfg.latent_sizes)
    matched = matched_uncompressed(data, cfg, f"vae_d{target}", target, run)
    results["none_matched"] = matched
    for method in cfg.methods:
        for d in cfg.latent_sizes:
            results[f"{method}_d{d}"] = train_and_evaluate(data, method, d, cfg, run)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in cfg.methods:
        ds = cfg.latent_sizes
        ax.plot(ds, [results[f"{method}_d{d}"]["test_bpd"] for d in ds], "o-", label=method)
    ax.axhline(baseline["test_bpd"], ls="--", c="k", label=f"no compression (latent {D})")
    ax.axhline(
        matched["test_bpd"], ls=":", c="k",
        label=f"no compression, matched capacity ({matched['num_params']:,} params)",
    )  # fmt: skip
    ax.set_xlabel("latent size")
    ax.set_ylabel("test bits/dim")
    ax.set_title(f"{data.name}: bits/dim vs latent size")
    ax.legend()
    run.save_figure(fig, "latent_sweep")
    compressed = [k for k in results if k.startswith(tuple(f"{m}_d" for m in cfg.methods))]
    return comparison_summary(data, results, compressed, matched, baseline, run)


@dataclass(frozen=True)
class CompressiveArchitecturesSettings(CompressiveSettings):
    """Settings of ``compressive-architectures``; the defaults are the smoke profile."""

    latent_size: int = 16


COMPRESSIVE_ARCHITECTURES_SMOKE = CompressiveArchitecturesSettings()
COMPRESSIVE_ARCHITECTURES_CPU = replace(  # MNIST, about 20 minutes here (see the sweep's)
    COMPRESSIVE_ARCHITECTURES_SMOKE,
    data="mnist",
    steps=400,
    warmup_steps=100,
    steps_per_level=2,
    levels=2,
    width=16,
    vae_hidden=(32, 16),
    conv_vae_width=16,
    anneal_steps=150,
    eval_samples=4,
    n_test=1000,
    latent_size=49,
)
COMPRESSIVE_ARCHITECTURES_FULL = replace(
    COMPRESSIVE_ARCHITECTURES_CPU,
    vae_hidden=(512, 256),
    conv_vae_width=32,
    n_test=0,
    dequantization="variational",  # thesis 5.5.1.1: variational dequantization
    steps=562_500,
    warmup_steps=5000,
    steps_per_level=8,
    width=128,
    anneal_steps=20000,
    eval_samples=64,
    latent_size=49,
)


@register(
    "compressive-architectures",
    description="Thesis Table 10: no compression, PPCA, linear VAE, VAE and intermixed VAE "
    "compression at ~94% compression, with parameter counts.",
    paper={
        "table_10_mnist": {
            "No compression": 0.98,
            "MaxPoolFlow": 1.10,
            "PPCA Compression": 1.08,
            "Linear VAE Compression": 1.07,
            "Intermixed Compression": 1.04,
            "VAE Compression": 1.01,
        },
        "table_10_cifar10": {
            "No compression": 3.27,
            "MaxPoolFlow": 3.41,
            "PPCA Compression": 3.37,
            "Linear VAE Compression": 3.35,
            "Intermixed Compression": 3.35,
            "VAE Compression": 3.30,
        },
        "note": "intermixed compression has 38% fewer parameters on CIFAR-10",
    },
    smoke=COMPRESSIVE_ARCHITECTURES_SMOKE,
    cpu=COMPRESSIVE_ARCHITECTURES_CPU,
    full=COMPRESSIVE_ARCHITECTURES_FULL,
)
def architectures(cfg: CompressiveArchitecturesSettings, run) -> dict:
    data = _data(cfg, run)
    d = cfg.latent_size
    rows = {
        "No compression": ("none", None),
        "PPCA Compression": ("ppca", d),
        "Linear VAE Compression": ("linear_vae", d),
        "Intermixed Compression": ("intermixed", d),
        "VAE Compression": ("vae", d),
    }
    results = {
        name: train_and_evaluate(data, comp, size, cfg, run, name)
        for name, (comp, size) in rows.items()
    }
    results["No compression (matched)"] = matched_uncompressed(data, cfg, "VAE Compression", d, run)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    names = list(results)
    ax.bar(range(len(names)), [results[n]["test_bpd"] for n in names])
    ax.set_xticks(range(len(names)), [n.replace(" Compression", "") for n in names], rotation=20)
    ax.set_ylabel("test bits/dim")
    ax.set_title(f"{data.name}: {results['VAE Compression']['compression_ratio']:.0%} compression")
    lo = min(results[n]["test_bpd"] for n in names)
    ax.set_ylim(0.9 * lo, None)
    run.save_figure(fig, "architectures")
    compressed = [n for n in results if not n.startswith("No compression")]
    matched, same = results["No compression (matched)"], results["No compression"]
    return comparison_summary(data, results, compressed, matched, same, run)


@dataclass(frozen=True)
class CompressiveDepthSettings(CompressiveSettings):
    """Settings of ``compressive-depth``; the defaults are the smoke profile."""

    depths: tuple[int, ...] = (0, 1)
    latent_size: int = 16
    methods: tuple[str, ...] = ("vae",)


COMPRESSIVE_DEPTH_SMOKE = CompressiveDepthSettings()
COMPRESSIVE_DEPTH_CPU = replace(
    COMPRESSIVE_DEPTH_SMOKE,
    steps=3000,
    steps_per_level=2,
    levels=2,
    width=32,
    vae_hidden=(512, 256),
    conv_vae_width=32,
    anneal_steps=1000,
    eval_samples=16,
    n_test=0,
    depths=(0, 1, 2, 4),
    methods=("ppca", "vae"),
)
COMPRESSIVE_DEPTH_FULL = replace(
    COMPRESSIVE_DEPTH_CPU,
    data="mnist",
    dequantization="variational",  # thesis 5.5.1.1: variational dequantization
    steps=562_500,
    warmup_steps=5000,
    steps_per_level=8,
    width=128,
    anneal_steps=20000,
    eval_samples=64,
    depths=(0, 1, 2, 4, 8),
    latent_size=196,
)


@register(
    "compressive-depth",
    description="Thesis Figure 20: bits/dim vs bijective steps per scale before one compression "
    "step at 75% compression (PPCA and VAE).",
    paper={
        "figure_20": "MNIST, 75% compression: without bijective steps the compressive flows "
        "model the data poorly; bits/dim improve with depth; PPCA worse than VAE at every depth",
    },
    smoke=COMPRESSIVE_DEPTH_SMOKE,
    cpu=COMPRESSIVE_DEPTH_CPU,
    full=COMPRESSIVE_DEPTH_FULL,
)
def depth(cfg: CompressiveDepthSettings, run) -> dict:
    data = _data(cfg, run)
    results = {}
    for method in cfg.methods:
        for k in cfg.depths:
            c = replace(cfg, steps_per_level=k)
            results[f"{method}_K{k}"] = train_and_evaluate(
                data, method, cfg.latent_size, c, run, f"{method}_K{k}"
            )
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in cfg.methods:
        ax.plot(
            cfg.depths,
            [results[f"{method}_K{k}"]["test_bpd"] for k in cfg.depths],
            "o-",
            label=method,
        )
    ax.set_xlabel("bijective steps per scale before compression")
    ax.set_ylabel("test bits/dim")
    ratio = 1 - cfg.latent_size / math.prod(data.image_shape)
    ax.set_title(f"{data.name}: latent {cfg.latent_size} ({ratio:.0%} compression)")
    ax.legend()
    run.save_figure(fig, "depth")
    summary = {"data": data.source, "results": results}
    summary["comparison"] = [
        {
            "model": n,
            "steps/scale": r["steps_per_level"],
            "bits/dim": r["test_bpd"],
            "params": r["num_params"],
        }
        for n, r in results.items()
    ]
    return summary


__all__ = ["train_and_evaluate", "latent_sweep", "architectures", "depth"]
