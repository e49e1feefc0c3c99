"""``vae-flows``: VAEs with flow posteriors and a boosted (GBNF) posterior (thesis Table 8,
Figures 11 and 16).

Every posterior named in ``posteriors`` is trained on the chosen data set for each seed (Adam,
KL annealing, lr halving on plateau), then evaluated on the test set: -ELBO (thesis convention
for GBNF: each draw's own component) and NLL by importance sampling with ``is_samples`` draws
(the proposal is the full mixture for GBNF), in nats (bits/dim for the 8-bit Frey faces). The
summary's ``comparison`` sets mean +- std over seeds beside the thesis's Table 8.

**Equal steps.** Every posterior gets the same total number of training steps, ``steps``. With
``gbnf_budget="shared"`` (the default) GBNF's ``C`` components share that budget: each boosting
stage trains ``(steps - C * finetune_steps) // C`` steps (the KL annealing scaled to the stage
in the same proportion), and GBNF+ then fine-tunes every component for ``finetune_steps``, so
GBNF+ uses the budget and GBNF (the same run before fine-tuning) ``C * finetune_steps`` steps
less. The weight fits (Algorithm 1, ``rho_steps`` per component) train the mixture weight alone
and are not counted. With ``gbnf_budget="per_component"`` every boosting stage gets ``steps``
(the thesis's schedule: GBNF trains ``C`` times longer), and with ``match_gbnf_budget`` every
single posterior is also trained for GBNF+'s total, reported in a separate, labelled column
(``at_gbnf_budget`` in the summary). ``summary["budget"]`` says how the budget was split.

**The table in parts.** ``--set posteriors='["gaussian","iaf"]' --set seeds=[0]`` runs a part of
the table; ``--set merge='["runs/part1","runs/part2"]'`` reads the ``config.json`` and
``summary.json`` of earlier parts (run directories, or their ``summary.json``), checks that every
setting except the part's own (:data:`PART_KEYS`) is the same, and summarises this run's
results together with theirs (this run's results replace a part's for the same posterior and
seed). A run with ``posteriors=[]`` and ``merge`` only joins the parts.

A second GBNF run without the decoder-shock remedy (``shock_compare``, first seed) gives the jump
of the validation loss at component boundaries with and without it (Figure 11). Offline, the
data are scikit-learn's 8x8 digits (binarised); ``data=mnist`` uses the cache of ``flowjax-thesis
data get mnist``, dynamically binarised (training images are Bernoulli draws at every step, the
validation and test images binarised once with a fixed seed); the run log and
``summary["data"]`` say which data was used.

Every training is one ``fit`` call of the engine with its own tags (``{"model", "seed"}``; GBNF
stages add ``component`` and ``phase``; the longer runs of the budget column add ``budget``) on
a data mesh over the available devices, so ``--resume`` continues from the last checkpoint,
also between the GBNF schedule's stages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, replace

import jax
import matplotlib.pyplot as plt
import numpy as np

from flowjax_thesis.data.binary_images import load_binary_images
from flowjax_thesis.experiments import register
from flowjax_thesis.models.vae import POSTERIORS, VAE, bits_per_dim, make_posterior
from flowjax_thesis.models.vae.boosting import shock_jumps, split_budget, train_gbnf_vae
from flowjax_thesis.models.vae.training import train_vae
from flowjax_thesis.train import data_mesh

LABELS = {
    "gaussian": "VAE",
    "planar": "Planar",
    "radial": "Radial",
    "sylvester_orthogonal": "Sylvester",
    "sylvester_householder": "Sylvester (Householder)",
    "sylvester_triangular": "Sylvester (triangular)",
    "iaf": "IAF",
    "realnvp": "RealNVP",
    "gbnf": "GBNF",
    "gbnf+": "GBNF+",
}

# Table 8 (nats; Freyfaces in bits/dim): (-ELBO, NLL) as (mean, std)
TABLE8 = {
    "mnist": {
        "VAE": ((89.32, 0.07), (84.97, 0.01)),
        "Planar": ((86.47, 0.09), (83.16, 0.07)),
        "Radial": ((88.43, 0.07), (84.32, 0.06)),
        "Sylvester": ((84.54, 0.01), (81.99, 0.02)),
        "IAF": ((86.46, 0.07), (83.14, 0.06)),
        "RealNVP": ((88.04, 0.07), (83.36, 0.09)),
        "GBNF": ((87.18, 0.53), (82.70, 0.11)),
        "GBNF+": ((87.12, 0.07), (82.67, 0.03)),
    },
    "freyfaces": {
        "VAE": ((4.84, 0.07), (4.78, 0.07)),
        "Planar": ((4.64, 0.04), (4.60, 0.04)),
        "Radial": ((4.73, 0.08), (4.68, 0.07)),
        "Sylvester": ((4.54, 0.03), (4.49, 0.03)),
        "IAF": ((4.73, 0.04), (4.70, 0.05)),
        "RealNVP": ((4.66, 0.17), (4.62, 0.16)),
        "GBNF": ((4.56, 0.07), (4.48, 0.01)),
        "GBNF+": ((4.51, 0.03), (4.41, 0.01)),
    },
    "omniglot": {
        "VAE": ((109.77, 0.06), (103.16, 0.01)),
        "Planar": ((105.72, 0.08), (100.18, 0.01)),
        "Radial": ((108.74, 0.57), (102.07, 0.50)),
        "Sylvester": ((101.99, 0.23), (98.54, 0.29)),
        "IAF": ((106.34, 0.14), (100.97, 0.07)),
        "RealNVP": ((106.22, 0.59), (100.43, 0.19)),
        "GBNF": ((105.53, 0.21), (99.11, 0.21)),
        "GBNF+": ((105.60, 0.20), (99.09, 0.17)),
    },
    "caltech101": {
        "VAE": ((120.98, 1.07), (108.43, 1.81)),
        "Planar": ((116.70, 1.70), (104.23, 1.60)),
        "Radial": ((118.89, 1.30), (106.88, 1.55)),
        "Sylvester": ((112.26, 2.01), (100.38, 1.20)),
        "IAF": ((119.62, 0.84), (108.41, 1.31)),
        "RealNVP": ((123.26, 2.06), (113.00, 1.70)),
        "GBNF": ((124.15, 1.70), (107.92, 0.81)),
        "GBNF+": ((121.06, 0.51), (106.55, 0.21)),
    },
}


#: the posteriors a run may name (``gbnf`` and ``gbnf+`` both come from one GBNF run)
VALID_POSTERIORS = (*POSTERIORS, "gbnf+")
#: settings that may differ between the parts of one table (see ``merge``)
PART_KEYS = (
    "posteriors",
    "seeds",
    "merge",
    "data_dir",
    "shock_compare",
    "match_gbnf_budget",
    "sample_chunk",
    "data_chunk",
)


@dataclass(frozen=True)
class VaeFlowsSettings:
    """Settings of ``vae-flows``; the defaults are the smoke profile."""

    data: str = "digits"
    data_dir: str = ""
    latent: int = 8
    hidden_units: int = 32
    planar_layers: int = 2
    sylvester_m: int = 4
    iaf_layers: int = 1
    realnvp_layers: int = 1
    gbnf_components: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    beta0: float = 0.0
    eval_every: int = 20
    plateau_patience: int = 5
    regularization: float = 1.0
    shock_max: float = 0.5
    shock_compare: bool = False
    is_samples: int = 20
    sample_chunk: int = 10
    data_chunk: int = 100
    posteriors: tuple[str, ...] = ("gbnf",)
    seeds: tuple[int, ...] = (0,)
    steps: int = 60  # every posterior's total training steps
    anneal_steps: int = 20
    gbnf_budget: str = "shared"  # or "per_component" (the thesis: each component gets `steps`)
    finetune_steps: int = 10  # per component, GBNF+
    rho_steps: int = 100  # Algorithm 1 per component (the weight alone; not counted)
    match_gbnf_budget: bool = True  # per_component: also train the others for GBNF+'s total
    merge: tuple[str, ...] = ()  # run directories (or summary.json) of earlier parts


VAE_FLOWS_SMOKE = VaeFlowsSettings()
# cpu, data=mnist: 2,000 steps + IS-NLL of 10,000 test images (100 draws) take ~40 core-minutes per
# posterior and seed (docs/results/vae-flows-mnist): run the table in parts and merge them.
VAE_FLOWS_CPU = replace(
    VAE_FLOWS_SMOKE,
    latent=32,
    hidden_units=256,
    planar_layers=16,
    sylvester_m=16,
    iaf_layers=8,
    realnvp_layers=8,
    gbnf_components=4,
    eval_every=250,
    shock_compare=False,  # true: Figure 11's second GBNF run (first seed)
    is_samples=100,
    sample_chunk=100,
    data_chunk=50,
    posteriors=(
        "gaussian",
        "planar",
        "radial",
        "sylvester_orthogonal",
        "iaf",
        "realnvp",
        "gbnf",
    ),
    seeds=(0, 1, 2),
    steps=2000,
    anneal_steps=500,
    finetune_steps=50,
)
VAE_FLOWS_FULL = replace(
    VAE_FLOWS_CPU,
    data="mnist",
    latent=64,
    hidden_units=512,
    sylvester_m=32,
    eval_every=782,
    plateau_patience=250,
    shock_compare=True,
    is_samples=2000,
    sample_chunk=100,
    data_chunk=50,
    steps=782_000,  # 1000 epochs of 50,000 images at batch 64
    anneal_steps=195_500,
    gbnf_budget="per_component",  # the thesis's schedule; the budget column matches it
    finetune_steps=39_100,  # 50 epochs
)


def gbnf_schedule(cfg: VaeFlowsSettings) -> dict:
    """How GBNF's steps follow from the budget (:func:`~flowjax_thesis.models.vae.boosting.
    split_budget`): steps and annealing per stage, fine-tuning, the totals of GBNF and GBNF+."""
    return split_budget(
        cfg.steps,
        cfg.anneal_steps,
        cfg.gbnf_components,
        cfg.finetune_steps,
        cfg.rho_steps,
        cfg.gbnf_budget,
    )


def check_posteriors(names) -> tuple[str, ...]:
    bad = [n for n in names if n not in VALID_POSTERIORS]
    if bad:
        raise ValueError(
            f"setting 'posteriors': unknown {bad}; expected names from {VALID_POSTERIORS}"
        )
    return tuple(names)


@register(
    "vae-flows",
    description="VAEs with planar/radial/Sylvester/IAF/RealNVP/GBNF posteriors at equal training "
    "steps (Table 8, Figures 11 and 16); scikit-learn's binarised 8x8 digits offline, "
    "--set data=mnist for MNIST (dynamically binarised) from `flowjax-thesis data get mnist`.",
    paper={
        "table": "Table 8 (thesis section 4.7.5): -ELBO and NLL (2000 importance samples), "
        "mean +- std over 3 runs; MNIST, Omniglot, Caltech 101 in nats, Freyfaces in bits/dim",
        "MNIST NLL": {k: v[1][0] for k, v in TABLE8["mnist"].items()},
        "schedule": "1000 epochs per model (KL annealed over the first 250), Adam 1e-3 halved on "
        "plateau; GBNF: C=4 RealNVP components with that schedule each, +50 epochs/component "
        "for GBNF+; planar/radial/Sylvester K=16 (M=32), IAF and RealNVP K=8, h=256 or 512",
    },
    smoke=VAE_FLOWS_SMOKE,
    cpu=VAE_FLOWS_CPU,
    full=VAE_FLOWS_FULL,
)
def vae_flows(cfg: VaeFlowsSettings, run) -> dict:
    posteriors = check_posteriors(cfg.posteriors)
    with_gbnf = "gbnf" in posteriors or "gbnf+" in posteriors
    if with_gbnf or cfg.gbnf_budget != "shared":
        budget = gbnf_schedule(cfg)
    else:  # GBNF is not in this part: its split is not needed (and need not fit `steps`)
        budget = {"split": "not run in this part", "steps_every_other_posterior": cfg.steps}
    parts = [_load_part(path, cfg) for path in cfg.merge]  # fail early on a mismatched part
    data = load_binary_images(cfg.data, cfg.data_dir or None)
    run.print(f"data: {data.source}")
    run.print(
        f"images {data.image_shape}, likelihood {data.likelihood}, train/val/test "
        f"{len(data.train)}/{len(data.val)}/{len(data.test)}, latent d={cfg.latent}"
    )
    run.print(f"budget: {cfg.steps} training steps per posterior; GBNF {budget['split']}")
    grey = data.likelihood != "bernoulli"
    unit = "bits/dim" if grey else "nats"

    def convert(v):
        return float(bits_per_dim(v, data.num_dims)) if grey else float(v)

    def model_for(name):
        k = {
            "iaf": cfg.iaf_layers,
            "realnvp": cfg.realnvp_layers,
            "gbnf": cfg.realnvp_layers,
        }
        post = make_posterior(
            name,
            num_layers=k.get(name, cfg.planar_layers),
            hidden_units=cfg.hidden_units,
            num_components=cfg.gbnf_components,
            num_ortho=min(cfg.sylvester_m, cfg.latent),
        )
        return VAE(data.image_shape, post, latent=cfg.latent, likelihood=data.likelihood)

    common = dict(
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        beta0=cfg.beta0,
        eval_every=cfg.eval_every,
        plateau_patience=cfg.plateau_patience,
        dynamic=data.dynamic_binarization,
        run=run,
        mesh=data_mesh(),
    )

    def evaluate(model, params, seed, steps):
        res = model.evaluate(
            params,
            data.test,
            jax.random.PRNGKey(10_000 + seed),
            num_samples=cfg.is_samples,
            sample_chunk=cfg.sample_chunk,
            data_chunk=cfg.data_chunk,
        )
        return {"seed": int(seed), "steps": int(steps), **{k: convert(v) for k, v in res.items()}}

    def train_single(name, seed, steps, tags):
        model = model_for(name)
        t0 = time.time()
        trained = train_vae(
            model,
            data.train,
            data.val,
            key=jax.random.PRNGKey(seed),
            steps=steps,
            anneal_steps=int(round(cfg.anneal_steps * steps / cfg.steps)),
            tags=tags,
            **common,
        )
        params = trained.state.best_params
        res = evaluate(model, params, seed, steps)
        res["seconds"] = round(time.time() - t0, 1)
        run.print(f"{name} seed {seed} ({steps} steps): {_fmt(res, unit)} ({res['seconds']} s)")
        return model, params, res

    def train_gbnf(seed, shock_max, tags):
        model = model_for("gbnf")
        params, info = train_gbnf_vae(
            model,
            data.train,
            data.val,
            key=jax.random.PRNGKey(seed),
            steps_per_component=budget["gbnf_boost_steps_per_component"],
            anneal_steps=budget["gbnf_anneal_steps_per_stage"],
            shock_max=shock_max,
            regularization=cfg.regularization,
            finetune_steps=cfg.finetune_steps,
            rho_steps=cfg.rho_steps,
            tags=tags,
            **common,
        )
        return model, params, info

    results: dict[str, dict[int, dict]] = {}  # posterior -> seed -> result (equal steps)
    at_gbnf: dict[str, dict[int, dict]] = {}  # the same at GBNF+'s total steps
    shock: dict[int, dict] = {}
    for part in parts:
        for target, source in ((results, part["models"]), (at_gbnf, part["at_gbnf"])):
            for name, by_seed in source.items():
                target.setdefault(name, {}).update(by_seed)
        shock.update(part["shock"])
        if "gbnf_total_steps" in part["budget"] and "gbnf_total_steps" not in budget:
            budget = part["budget"]  # GBNF's rows came from this part
    # the budget column: only the thesis's schedule gives GBNF more steps than the others
    match = cfg.match_gbnf_budget and cfg.gbnf_budget == "per_component"
    long_steps = budget.get("gbnf_plus_total_steps" if cfg.finetune_steps else "gbnf_total_steps")
    singles = [n for n in posteriors if n not in ("gbnf", "gbnf+")]
    fitted = {}
    for seed in cfg.seeds:
        for name in singles:
            model, params, res = train_single(name, seed, cfg.steps, {"model": name, "seed": seed})
            results.setdefault(name, {})[seed] = res
            fitted.setdefault(name, (model, params))
            if match:
                tags = {"model": name, "seed": seed, "budget": long_steps}
                _, _, res = train_single(name, seed, long_steps, tags)
                at_gbnf.setdefault(name, {})[seed] = res
        if not with_gbnf:
            continue
        t0 = time.time()
        model, params, info = train_gbnf(seed, cfg.shock_max, {"model": "gbnf", "seed": seed})
        for label, p in (("gbnf", info.get("params_gbnf", params)), ("gbnf+", params)):
            steps = budget["gbnf_total_steps" if label == "gbnf" else "gbnf_plus_total_steps"]
            res = evaluate(model, p, seed, steps)
            res["seconds"] = round(time.time() - t0, 1)
            res["weights"] = model.posterior.gbnf(model.latent).weights(p["flow"]).round(3).tolist()
            results.setdefault(label, {})[seed] = res
            fitted.setdefault(label, (model, p))
            run.print(
                f"{label} seed {seed} ({steps} steps): {_fmt(res, unit)} ({res['seconds']} s); "
                f"weights {res['weights']}"
            )
        jumps = {"seed": int(seed), "with_remedy": shock_jumps(info)}
        histories = {"with remedy": info}
        if cfg.shock_compare and seed == cfg.seeds[0]:
            tags = {"model": "gbnf-no-remedy", "seed": seed}
            _, _, info0 = train_gbnf(seed, 0.0, tags)
            jumps["without_remedy"] = shock_jumps(info0)
            histories["without remedy"] = info0
        shock[int(seed)] = jumps
        run.print(f"decoder shock jumps (val -ELBO, nats) seed {seed}: {jumps}")
        if seed == cfg.seeds[0]:
            _shock_figure(run, histories, data.name)

    if fitted:
        _recon_figure(run, fitted, data)
    summary = _summarise(results, data.name, unit, at_gbnf, long_steps, shock)
    summary["budget"] = budget
    summary["parts"] = list(cfg.merge)
    summary["data"] = data.source
    summary["unit"] = unit
    return summary


def _load_part(path: str, cfg: VaeFlowsSettings) -> dict:
    """Per-seed results of an earlier part (a run directory or its ``summary.json``), after
    checking that its settings agree with ``cfg`` on everything but :data:`PART_KEYS`."""
    directory = os.path.dirname(path) if path.endswith(".json") else path
    files = [os.path.join(directory, f) for f in ("config.json", "summary.json")]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(
            f"setting 'merge': expected a vae-flows run directory with config.json and "
            f"summary.json, {missing[0]} does not exist"
        )
    with open(files[0]) as f:
        config = json.load(f)
    with open(files[1]) as f:
        summary = json.load(f)
    if config.get("experiment", "vae-flows") != "vae-flows":
        raise ValueError(
            f"setting 'merge': {directory} is a run of {config['experiment']!r}, not vae-flows"
        )
    for key, value in dataclasses.asdict(cfg).items():
        if key in PART_KEYS or key not in config:
            continue
        if _as_tuple(config[key]) != _as_tuple(value):
            raise ValueError(
                f"setting 'merge': {directory} was run with {key}={config[key]!r}, this run has "
                f"{key}={value!r}; the parts of one table may differ only in {PART_KEYS}"
            )

    def by_seed(models):
        return {
            name: {int(r["seed"]): r for r in m["per_seed"]} for name, m in (models or {}).items()
        }

    shock = summary.get("checks", {}).get("shock_per_seed", [])
    return {
        "budget": summary.get("budget") or {},
        "models": by_seed(summary.get("models")),
        "at_gbnf": by_seed(summary.get("at_gbnf_budget", {}).get("models")),
        "shock": {int(s["seed"]): s for s in shock if "seed" in s},
    }


def _as_tuple(v):
    return tuple(_as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _fmt(r, unit):
    return (
        f"-ELBO {r['neg_elbo']:.3f} (mixture {r['neg_elbo_mixture']:.3f}) NLL {r['nll']:.3f} {unit}"
    )


def _ms(values):
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _ordered(results):
    order = list(LABELS)
    return sorted(results, key=lambda n: order.index(n) if n in order else len(order))


def _model_stats(results):
    """Mean/std over seeds and the per-seed records (sorted by seed) of each posterior."""
    models = {}
    for name in _ordered(results):
        res = [results[name][s] for s in sorted(results[name])]
        elbo, nll = _ms([r["neg_elbo"] for r in res]), _ms([r["nll"] for r in res])
        models[name] = {
            "neg_elbo_mean": elbo[0],
            "neg_elbo_std": elbo[1],
            "nll_mean": nll[0],
            "nll_std": nll[1],
            "seeds": sorted(results[name]),
            "steps": sorted({r.get("steps") for r in res}, key=str),
            "per_seed": res,
        }
    return models


def _beats(results, a, b):
    """Whether ``a``'s NLL is below ``b``'s on every seed both have (None: no common seed)."""
    common = sorted(set(results.get(a, {})) & set(results.get(b, {})))
    if not common:
        return None
    return all(results[a][s]["nll"] < results[b][s]["nll"] for s in common)


def _summarise(results, data_name, unit, at_gbnf=None, long_steps=None, shock=None):
    thesis = TABLE8.get(data_name, TABLE8["mnist"])
    thesis_name = data_name if data_name in TABLE8 else "mnist"
    models = _model_stats(results)
    long_models = _model_stats(at_gbnf or {})
    rows = []
    for name, m in models.items():
        label = LABELS.get(name, name)
        row = {
            "model": label,
            "seeds": len(m["seeds"]),
            "steps": m["steps"][0] if len(m["steps"]) == 1 else m["steps"],
            f"-ELBO ({unit})": f"{m['neg_elbo_mean']:.2f} ± {m['neg_elbo_std']:.2f}",
            f"NLL ({unit})": f"{m['nll_mean']:.2f} ± {m['nll_std']:.2f}",
            "NLL <= -ELBO (all seeds)": all(r["nll"] <= r["neg_elbo"] for r in m["per_seed"]),
        }
        if long_models:
            col = f"NLL ({unit}) at GBNF's budget ({long_steps} steps)"
            lm = long_models.get(name)
            if name in ("gbnf", "gbnf+"):
                row[col] = "(its own budget)"
            else:
                row[col] = f"{lm['nll_mean']:.2f} ± {lm['nll_std']:.2f}" if lm else "-"
        if label in thesis:
            (te, tes), (tn, tns) = thesis[label]
            row[f"thesis {thesis_name} -ELBO"] = f"{te:.2f} ± {tes:.2f}"
            row[f"thesis {thesis_name} NLL"] = f"{tn:.2f} ± {tns:.2f}"
        rows.append(row)
        if "gaussian" in results and name != "gaussian":
            m["beats_vae_nll_every_seed"] = _beats(results, name, "gaussian")
    checks = {}
    if "gbnf" in results and "realnvp" in results:
        checks["gbnf_beats_realnvp_nll_every_seed"] = _beats(results, "gbnf", "realnvp")
    if "gbnf+" in results and "gbnf" in results:
        common = sorted(set(results["gbnf+"]) & set(results["gbnf"]))
        checks["gbnf_plus_not_worse_nll_every_seed"] = all(
            results["gbnf+"][s]["nll"] <= results["gbnf"][s]["nll"] + 0.05 for s in common
        )
    if "gaussian" in results:
        checks["flows_below_vae_nll"] = {
            n: m["nll_mean"] < models["gaussian"]["nll_mean"]
            for n, m in models.items()
            if n != "gaussian"
        }
    per_seed = [shock[s] for s in sorted(shock or {})]
    if per_seed:
        w = [j for s in per_seed for j in s["with_remedy"]]
        checks["shock_jump_with_remedy_mean"] = float(np.mean(w)) if w else None
        wo = [j for s in per_seed for j in s.get("without_remedy", [])]
        checks["shock_jump_without_remedy_mean"] = float(np.mean(wo)) if wo else None
        checks["shock_per_seed"] = per_seed
    out = {"models": models, "checks": checks, "comparison": rows}
    if long_models:
        out["at_gbnf_budget"] = {"steps": long_steps, "models": long_models}
    return out


def _shock_figure(run, histories, data_name):
    fig, axes = plt.subplots(1, len(histories), figsize=(6 * len(histories), 3.6), squeeze=False)
    for ax, (title, info) in zip(axes[0], histories.items(), strict=True):
        h = info["history"]
        steps = [r["step"] for r in h]
        ax.plot(steps, [r["train_loss"] for r in h], label="training loss (eq. 4.21)")
        ax.plot(steps, [r["val_neg_elbo"] for r in h], label="validation -ELBO")
        for i, b in enumerate(info["boundaries"]):
            ax.axvline(b, color="k", ls=":" if i >= len(info["boundaries"]) // 2 else "--", lw=0.8)
        jumps = shock_jumps(info)
        ax.set_title(f"GBNF {title}: jumps {', '.join(f'{j:.2f}' for j in jumps)} nats")
        ax.set_xlabel("step")
        ax.set_ylabel("nats")
        ax.legend(fontsize=7)
    fig.suptitle(f"Decoder shock ({data_name}); dashed: boosting stages, dotted: fine-tuning")
    fig.tight_layout()
    run.save_figure(fig, "decoder_shock")
    plt.close(fig)


def _recon_figure(run, fitted, data, n=8):
    x = data.test[:n]
    names = [k for k in ("sylvester_orthogonal", "gbnf+", "gbnf", "gaussian") if k in fitted][:2]
    if not names:
        names = list(fitted)[:2]
    fig, axes = plt.subplots(1 + len(names), n, figsize=(n * 0.9, 1.0 * (1 + len(names))))
    for j in range(n):
        axes[0, j].imshow(x[j, ..., 0], cmap="gray", vmin=0, vmax=1)
    for i, name in enumerate(names, start=1):
        model, params = fitted[name]
        enc = model.encode(params, x)
        z, _ = model.sample_posterior(params, enc, jax.random.PRNGKey(0), 1)
        rec = np.asarray(model.decode_mean(params, z[:, 0]))
        for j in range(n):
            axes[i, j].imshow(rec[j, ..., 0], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(LABELS.get(name, name), fontsize=7)
    axes[0, 0].set_ylabel("data", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Reconstructions ({data.name}), like Figure 16", fontsize=9)
    run.save_figure(fig, "reconstructions")
    plt.close(fig)
