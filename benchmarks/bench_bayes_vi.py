"""Flow VI side by side with NumPyro's autoguides (issue 16), in one process.

Models (each written once in NumPyro, :mod:`flowjax_thesis.bayes.numpyro_models`, and turned into
the same ``BayesModel`` by :func:`~flowjax_thesis.bayes.from_numpyro`): centered eight schools,
Neal's funnel, MRP and a varying-intercepts regression with very unequal group sizes. References:
exact draws (funnel), NUTS on the non-centered twin mapped back (eight schools, varying
intercepts), NUTS (MRP). Every approximation gets the same number of target evaluations
(``steps * particles``) and the same optimiser (Adam, cosine decay from ``lr``); k-hat over
``eval_samples`` draws; sd ratio (median over coordinates of sd_q / sd_ref), mean error (mean
|m_q - m_ref| / sd_ref) in the unconstrained coordinates; wall time of the fit including
compilation. ``best`` per model: our flow and NumPyro's autoguide with the lowest k-hat.
"""

from __future__ import annotations

import time
from typing import Any

import jax

from flowjax_thesis.bayes.autoguides import (
    AUTOGUIDES,
    autoguide_draws_and_log_weights,
    fit_autoguide,
)
from flowjax_thesis.bayes.numpyro_models import NUMPYRO_MODELS, numpyro_posterior
from flowjax_thesis.bayes.nuts import reference_posterior
from flowjax_thesis.bayes.vi import assess, assess_draws, fit_family

FLOWS = ("realnvp", "iaf", "spline", "gbnf")
OURS = ("mean_field", "full_rank", "realnvp", "iaf", "gbnf")


def _row(source, family, a, seconds):
    return {
        "source": source,
        "family": family,
        "khat": round(float(a["khat"]), 3),
        "sd_ratio": round(float(a["sd_ratio"]), 3),
        "mean_err": round(float(a["mean_err"]), 3),
        "seconds": round(float(seconds), 1),
    }


def _ours_row(bm, ref, family, k_fit, k_eval, fs, eval_samples):
    fitted = fit_family(
        bm,
        family,
        key=k_fit,
        steps=fs["steps"],
        num_samples=fs["particles"],
        lr=fs["lr"],
        family_kwargs=fs["kw"],
    )
    a = assess(fitted, bm, k_eval, eval_samples, ref)
    return _row("ours", family, a, fitted.seconds)


def _guide_row(bm, ref, guide, k_fit, k_eval, fs, eval_samples):
    g = fit_autoguide(
        bm, guide, key=k_fit, steps=fs["steps"], num_particles=fs["particles"], lr=fs["lr"]
    )
    x, lw = autoguide_draws_and_log_weights(g, bm, k_eval, eval_samples)
    return _row("numpyro", guide, assess_draws(x, lw, ref), g.seconds)


def _as_list(v):
    return list(v.split(",")) if isinstance(v, str) else list(v)


def compare(
    models=NUMPYRO_MODELS,
    ours=OURS,
    guides=AUTOGUIDES,
    steps: int = 1500,
    particles: int = 16,
    lr: float = 1e-2,
    layers: int = 8,
    hidden=(32, 32),
    eval_samples: int = 4096,
    nuts_warmup: int = 500,
    nuts_samples: int = 1000,
    nuts_chains: int = 2,
    mrp_states: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """The side-by-side table (see the module docstring); one row per (model, approximation)."""
    models, ours, guides = _as_list(models), _as_list(ours), _as_list(guides)
    steps, particles = int(steps), int(particles)
    family_kwargs = {"layers": int(layers), "hidden": tuple(int(h) for h in _as_list(hidden))}
    fit_settings = {"steps": steps, "particles": particles, "lr": float(lr), "kw": family_kwargs}
    t_start = time.time()
    key = jax.random.PRNGKey(int(seed))
    rows, best = [], {}
    for m_index, name in enumerate(models):
        bm, _, _ = numpyro_posterior(name, mrp_states=int(mrp_states), seed=int(seed))
        k_model = jax.random.fold_in(key, m_index)
        ref = reference_posterior(
            bm,
            jax.random.fold_in(k_model, 10_000),
            num_warmup=int(nuts_warmup),
            num_samples=int(nuts_samples),
            num_chains=int(nuts_chains),
        )
        rows.append(
            {
                "model": name,
                "dim": bm.dim,
                "source": "reference",
                "family": ref.method,
                "khat": None,
                "sd_ratio": 1.0,
                "mean_err": 0.0,
                "seconds": round(ref.seconds, 1),
                **{k: v for k, v in ref.diagnostics.items()},
            }
        )
        model_rows = []

        jobs = [("ours", i, f) for i, f in enumerate(ours)]
        jobs += [("numpyro", 100 + i, g) for i, g in enumerate(guides)]
        for source, i, label in jobs:
            k_fit, k_eval = jax.random.split(jax.random.fold_in(k_model, i))
            job = _ours_row if source == "ours" else _guide_row
            try:
                r = job(bm, ref, label, k_fit, k_eval, fit_settings, int(eval_samples))
            except Exception as err:  # one failing approximation must not lose the others
                r = {"source": source, "family": label, "error": f"{type(err).__name__}: {err}"}
                print(f"[{name}] {source:8s} {label:24s} failed: {r['error']}", flush=True)
                model_rows.append({**r, "model": name, "dim": bm.dim})
                continue
            r.update(model=name, dim=bm.dim)
            model_rows.append(r)
            print(
                f"[{name}] {r['source']:8s} {r['family']:24s} k-hat {r['khat']:6.2f} "
                f"sd ratio {r['sd_ratio']:5.2f} mean err {r['mean_err']:5.2f} "
                f"{r['seconds']:7.1f} s",
                flush=True,
            )
        rows += model_rows
        done = [r for r in model_rows if "error" not in r]
        flows = [r for r in done if r["source"] == "ours" and r["family"] in FLOWS]
        theirs = [r for r in done if r["source"] == "numpyro"]
        pick = {}
        if flows:
            pick["ours"] = min(flows, key=lambda r: r["khat"])
        if theirs:
            pick["numpyro"] = min(theirs, key=lambda r: r["khat"])
        if len(pick) == 2:
            o, t = pick["ours"], pick["numpyro"]
            pick["goal_met"] = bool(
                o["khat"] < t["khat"]
                and 0.9 <= o["sd_ratio"] <= 1.1
                and o["seconds"] <= t["seconds"]
            )
        best[name] = pick
    return {
        "benchmark": "bayes-vi",
        "settings": {
            "steps": steps,
            "particles": particles,
            "target_evaluations_per_fit": steps * particles,
            "lr": lr,
            "layers": layers,
            "hidden": _as_list(hidden),
            "eval_samples": eval_samples,
            "nuts": [nuts_warmup, nuts_samples, nuts_chains],
        },
        "backend": jax.default_backend(),
        "rows": rows,
        "best": best,
        "goal": "per model: our best flow's k-hat below NumPyro's best autoguide's, sd ratio in "
        "0.9-1.1, no more wall time",
        "total_seconds": round(time.time() - t_start, 1),
    }


def table(result: dict) -> str:
    """The rows as a markdown table."""
    head = "| model | source | family | k-hat | sd ratio | mean err | seconds |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['source']} | {r['family']} | {r['error']} ||||")
            continue
        k = "" if r["khat"] is None else f"{r['khat']:.2f}"
        lines.append(
            f"| {r['model']} | {r['source']} | {r['family']} | {k} | {r['sd_ratio']:.2f} | "
            f"{r['mean_err']:.2f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    kwargs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    out = compare(**kwargs)
    print(json.dumps(out, indent=2, default=float))
    print(table(out))
