"""``bayes-vi``: the blog series' reliable-VI workflow on Bayesian models.

For each model (centered and non-centered eight schools, Neal's funnel, a multilevel logistic MRP
model on a synthetic survey) we make a reference posterior (exact draws for the funnel; NUTS
otherwise, on the non-centered parameterisation for centered eight schools), fit every variational
family by VI, and report per fit: the ELBO, PSIS k-hat of the importance weights, the errors of
the marginal means and standard deviations against the reference (raw q and PSIS-corrected), the
median sd ratio (under 1 = under-dispersed), and the wall time of the fit including compilation
as a fraction of the reference's. For MRP also the poststratified state estimates against NUTS
and the known truth. Figures: marginals of q against the reference, a 2-D pair (the funnel
geometry), an ArviZ forest plot (94% HDI per constrained site: reference, mean-field and the fit
with the lowest k-hat) and the poststratified state estimates.

A user's NumPyro model runs through the same workflow with ``--set model=path/to/file.py:function``
(a model function called without arguments, its data loaded in that file; see
:func:`load_user_model`): it becomes a ``BayesModel`` by
:func:`~flowjax_thesis.bayes.from_numpyro`, its reference is NUTS on it, and the families start
at NumPyro's ``init_to_median`` point instead of the origin. ``model`` may also
name one built-in model; empty (the default) runs the ``models`` list, whose entries may be
built-in names or file specs too.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace

import jax
import numpy as np

from flowjax_thesis.bayes.models import MODELS, BayesModel, get_model, poststratify
from flowjax_thesis.bayes.numpyro_bridge import from_numpyro
from flowjax_thesis.bayes.nuts import reference_posterior
from flowjax_thesis.bayes.vi import assess, fit_family
from flowjax_thesis.experiments import register
from flowjax_thesis.plotting import plt

# coordinates shown in the figures: (marginals, (x, y) of the pair plot)
_SHOW = {
    "eight_schools_centered": ([0, 1, 2], (2, 1)),
    "eight_schools_noncentered": ([0, 1, 2], (2, 1)),
    "funnel": ([0, 1, 2], (1, 0)),
    "mrp": ([0, 1, 2, 5], (5, 2)),
}
_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def load_user_model(spec: str) -> BayesModel:
    """``path/to/file.py:function``: the NumPyro model ``function`` of that file (its data loaded
    in the file, called without arguments) as a :class:`BayesModel` via ``from_numpyro``."""
    path, sep, function = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not function:
        raise ValueError(
            f"setting 'model' expects a built-in model ({', '.join(MODELS)}) or "
            f"path/to/file.py:function, got {spec!r}"
        )
    if not os.path.isfile(path):
        raise ValueError(f"setting 'model': no such file {path!r}")
    module_name = f"_bayes_vi_user_{abs(hash(os.path.abspath(path)))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ValueError(f"setting 'model': {path} has no function {function!r}")
    return from_numpyro(fn)


def _model_names(cfg: BayesViSettings) -> list[str]:
    return [cfg.model] if cfg.model else list(cfg.models)


def _build_model(name: str, cfg: BayesViSettings) -> BayesModel:
    if name in MODELS:
        return get_model(name, **_model_kwargs(name, cfg))
    return load_user_model(name)


def _show(name: str, model: BayesModel):
    """Coordinates shown in the figures (built-in choice, else the first three)."""
    if name in _SHOW:
        return _SHOW[name]
    cols = list(range(min(model.dim, 3)))
    return cols, ((1, 0) if model.dim > 1 else (0, 0))


def _model_kwargs(name: str, cfg: BayesViSettings) -> dict:
    if name == "funnel":
        return {"dim": cfg.funnel_dim}
    if name == "mrp":
        return {"num_states": cfg.mrp_states, "num_respondents": cfg.mrp_respondents}
    return {}


def _variants(cfg: BayesViSettings) -> list[tuple[str, str]]:
    runs = [(family, cfg.objective) for family in cfg.families]
    for family, objective in cfg.extra_variants:
        if (family, objective) not in runs:
            runs.append((family, objective))
    return runs


def _marginals_figure(name, model, ref, fits, show):
    cols = len(show[0]) + 1
    fig, axes = plt.subplots(1, cols, figsize=(3.0 * cols, 2.8))
    for ax, j in zip(axes[:-1], show[0]):
        lo, hi = np.quantile(ref.draws[:, j], [0.005, 0.995])
        pad = 0.15 * (hi - lo)
        bins = np.linspace(lo - pad, hi + pad, 50)
        ax.hist(ref.draws[:, j], bins, density=True, color="0.8", label=f"reference ({ref.method})")
        for c, (label, a) in enumerate(fits.items()):
            ax.hist(a["draws"][:, j], bins, density=True, histtype="step", lw=1.3,
                    color=_COLORS[c % len(_COLORS)], label=label)  # fmt: skip
        ax.set_title(model.names[j], fontsize=9)
        ax.set_yticks([])
    ix, iy = show[1]
    ax = axes[-1]
    ax.scatter(ref.draws[:1000, ix], ref.draws[:1000, iy], s=2, color="0.6", label="reference")
    for c, (label, a) in enumerate(fits.items()):
        ax.scatter(a["draws"][:300, ix], a["draws"][:300, iy], s=2,
                   color=_COLORS[c % len(_COLORS)], label=label)  # fmt: skip
    ax.set_xlabel(model.names[ix], fontsize=8)
    ax.set_ylabel(model.names[iy], fontsize=8)
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{name}: marginals of q against the reference", fontsize=10)
    fig.tight_layout()
    return fig


def _arviz_forest(name, model, ref, fits, nuts_kwargs):
    """ArviZ forest plot (94% HDI per constrained site) of the reference, mean-field and the fit
    with the lowest k-hat, from ``to_inference_data``-style InferenceData."""
    from flowjax_thesis.bayes.arviz_output import draws_to_inference_data
    from flowjax_thesis.bayes.diagnostics import require_arviz

    az = require_arviz()
    chains = nuts_kwargs["num_chains"] if ref.method != "exact" else 1
    datasets = {
        f"reference ({ref.method.split(' ')[0]})": draws_to_inference_data(model, ref.draws, chains)
    }
    chosen = [k for k in fits if k == "mean_field"]
    finite = {k: a["khat"] for k, a in fits.items() if np.isfinite(a["khat"])}
    if finite:
        best = min(finite, key=finite.get)
        if best not in chosen:
            chosen.append(best)
    for label in chosen:
        datasets[f"{label} (k-hat {fits[label]['khat']:.2f})"] = draws_to_inference_data(
            model, fits[label]["draws"]
        )
    first = next(iter(datasets.values())).posterior
    var_names = [v for v in first.data_vars if first[v][0, 0].size <= 10][:6]
    axes = az.plot_forest(
        list(datasets.values()),
        model_names=list(datasets),
        var_names=var_names or None,
        combined=True,
        hdi_prob=0.94,
        figsize=(6.0, 0.3 * sum(first[v][0, 0].size for v in var_names) * len(datasets) + 1.5),
    )
    fig = np.ravel(axes)[0].figure
    fig.suptitle(f"{name}: 94% HDI per site (ArviZ)", fontsize=10)
    return fig


def _poststrat_figure(model, ref_ps, fit_ps):
    S = model.data["num_states"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * S), 3.2))
    xs = np.arange(S)
    ax.errorbar(xs, ref_ps["mean"], 2 * ref_ps["sd"], fmt="s", color="k", ms=3, label="NUTS ±2sd")
    for c, (label, ps) in enumerate(fit_ps.items(), start=1):
        offset = 0.12 * c
        ax.errorbar(xs + offset, ps["mean"], 2 * ps["sd"], fmt="o", ms=2, lw=0.8,
                    color=_COLORS[(c - 1) % len(_COLORS)], label=label)  # fmt: skip
    ax.plot(xs, model.data["truth_state"], "x", color="red", label="truth")
    ax.plot(xs, model.data["raw_survey_state"], "+", color="0.5", label="raw survey")
    ax.set_xlabel("state")
    ax.set_ylabel("population share yes")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class BayesViSettings:
    """Settings of ``bayes-vi``; the defaults are the smoke profile."""

    model: str = ""
    models: tuple[str, ...] = ("eight_schools_centered", "funnel", "mrp")
    objective: str = "elbo"
    lr: float = 0.01
    layers: int = 4
    hidden: tuple[int, ...] = (32, 32)
    funnel_dim: int = 10
    mrp_respondents: int = 2000
    seed: int = 0
    families: tuple[str, ...] = ("mean_field", "full_rank", "realnvp")
    extra_variants: tuple[tuple[str, str], ...] = ()  # (family, objective) pairs
    steps: int = 300
    num_samples: int = 32
    eval_samples: int = 2000
    nuts_warmup: int = 200
    nuts_samples: int = 200
    nuts_chains: int = 1
    mrp_states: int = 8


BAYES_VI_SMOKE = BayesViSettings()
BAYES_VI_CPU = replace(
    BAYES_VI_SMOKE,
    models=("eight_schools_centered", "eight_schools_noncentered", "funnel", "mrp"),
    layers=8,
    families=("mean_field", "full_rank", "planar", "realnvp", "iaf", "spline", "gbnf"),
    extra_variants=(("realnvp", "iwelbo"), ("mean_field", "elbo_stl")),
    steps=3000,
    num_samples=64,
    eval_samples=10000,
    nuts_warmup=1000,
    nuts_samples=1000,
    nuts_chains=4,
    mrp_states=20,
)
BAYES_VI_FULL = replace(
    BAYES_VI_CPU,
    layers=16,
    hidden=(64, 64),
    extra_variants=(("realnvp", "iwelbo"), ("mean_field", "elbo_stl"), ("realnvp", "elbo_stl")),
    steps=20000,
    num_samples=256,
    eval_samples=100_000,
    nuts_warmup=2000,
    nuts_samples=5000,
    mrp_states=50,
)


@register(
    "bayes-vi",
    description="Blog series: flow VI (mean-field .. spline flows) on eight schools, the funnel "
    "and MRP with PSIS k-hat and a NUTS reference.",
    paper={
        "blog": "part 5 argues flows (RealNVP) fix the under-dispersion of mean-field VI "
        "('spherical cows') at a palatable run time; the series reports no numbers for these "
        "models; Yao et al. (2018): k-hat < 0.7 means the fit is usable after PSIS"
    },
    smoke=BAYES_VI_SMOKE,
    cpu=BAYES_VI_CPU,
    full=BAYES_VI_FULL,
)
def bayes_vi(cfg: BayesViSettings, run) -> dict:
    user = [m for m in _model_names(cfg) if m not in MODELS]
    if user:
        run.print(f"data of user models: as loaded by their files ({', '.join(user)})")
    if len(user) < len(_model_names(cfg)):
        run.print(
            "data: eight schools (Rubin 1981, the 8 published effects and standard errors); "
            "Neal's funnel (analytic); MRP: a synthetic census and survey generated from known "
            f"parameters (seed {cfg.seed}, {cfg.mrp_states} states, "
            f"{cfg.mrp_respondents} respondents)"
        )
    key = jax.random.PRNGKey(cfg.seed)
    nuts_kwargs = dict(
        num_warmup=cfg.nuts_warmup,
        num_samples=cfg.nuts_samples,
        num_chains=cfg.nuts_chains,
    )
    if run.dry_run:  # a plan needs the first fit, not the NUTS reference before it
        nuts_kwargs.update(num_warmup=10, num_samples=10, num_chains=1)
    family_kwargs = dict(layers=cfg.layers, hidden=cfg.hidden)
    rows, summary = [], {}
    for m_index, spec in enumerate(_model_names(cfg)):
        model = _build_model(spec, cfg)
        name = spec if spec in MODELS else model.name
        if spec not in MODELS:
            run.print(f"[{name}] user NumPyro model {spec}: sites {list(model.data['sites'])}")
        k_model = jax.random.fold_in(key, m_index)
        ref = reference_posterior(model, jax.random.fold_in(k_model, 10_000), **nuts_kwargs)
        run.print(
            f"[{name}] dim {model.dim}; reference: {ref.method}, {len(ref.draws)} draws, "
            f"{ref.seconds:.1f} s incl. compile {ref.diagnostics}"
        )
        entry = {"reference": {"method": ref.method, "seconds": ref.seconds, **ref.diagnostics}}
        rows.append(
            {
                "model": name,
                "family": f"reference: {ref.method}",
                "objective": "",
                "ELBO": float("nan"),
                "k-hat": float("nan"),
                "mean err": 0.0,
                "sd err": 0.0,
                "sd ratio": 1.0,
                "mean err (PSIS)": float("nan"),
                "sd err (PSIS)": float("nan"),
                "seconds": round(ref.seconds, 2),
                "time / ref": 1.0,
                "poststrat err (pp)": 0.0 if name == "mrp" else None,
                "poststrat sd ratio": 1.0 if name == "mrp" else None,
            }
        )
        ref_ps = poststratify(model, ref.draws) if name == "mrp" else None
        fits, fit_ps = {}, {}
        for v_index, (family, objective) in enumerate(_variants(cfg)):
            label = family if objective == cfg.objective else f"{family}+{objective}"
            k_fit, k_eval = jax.random.split(jax.random.fold_in(k_model, v_index))
            fitted = fit_family(
                model,
                family,
                key=k_fit,
                steps=cfg.steps,
                num_samples=cfg.num_samples,
                lr=cfg.lr,
                objective=objective,
                family_kwargs=family_kwargs,
                run=run,
                tags={"model": name, "family": label},
                loc=None if spec in MODELS else model.data["init"],
            )
            a = assess(fitted, model, k_eval, cfg.eval_samples, ref)
            fits[label] = a
            row = {
                "model": name,
                "family": family,
                "objective": objective,
                "ELBO": a["elbo"],
                "k-hat": a["khat"],
                "mean err": a["mean_err"],
                "sd err": a["sd_err"],
                "sd ratio": a["sd_ratio"],
                "mean err (PSIS)": a["mean_err_psis"],
                "sd err (PSIS)": a["sd_err_psis"],
                "seconds": round(fitted.seconds, 2),
                "time / ref": fitted.seconds / ref.seconds if ref.method != "exact" else None,
                "poststrat err (pp)": None,
                "poststrat sd ratio": None,
            }
            if ref_ps is not None:
                ps = poststratify(model, a["draws"])
                fit_ps[label] = ps
                row["poststrat err (pp)"] = 100 * float(
                    np.mean(np.abs(ps["mean"] - ref_ps["mean"]))
                )
                row["poststrat sd ratio"] = float(np.median(ps["sd"] / ref_ps["sd"]))
            rows.append(row)
            run.print(
                f"[{name}] {label:22s} ELBO {a['elbo']:9.3f}  k-hat {a['khat']:6.2f}  "
                f"mean err {a['mean_err']:.3f}  sd err {a['sd_err']:.3f}  "
                f"sd ratio {a['sd_ratio']:.2f}  ({fitted.seconds:.1f} s)"
            )
        if ref_ps is not None:
            truth = model.data["truth_state"]
            entry["poststrat_nuts_vs_truth_pp"] = 100 * float(
                np.mean(np.abs(ref_ps["mean"] - truth))
            )
            entry["raw_survey_vs_truth_pp"] = 100 * float(
                np.mean(np.abs(model.data["raw_survey_state"] - truth))
            )
            run.print(
                f"[{name}] poststratified NUTS vs truth: {entry['poststrat_nuts_vs_truth_pp']:.2f} "
                f"pp; raw survey vs truth: {entry['raw_survey_vs_truth_pp']:.2f} pp"
            )
            run.save_figure(_poststrat_figure(model, ref_ps, fit_ps), f"poststrat_{name}")
        run.save_figure(
            _marginals_figure(name, model, ref, fits, _show(name, model)), f"marginals_{name}"
        )
        run.save_figure(_arviz_forest(name, model, ref, fits, nuts_kwargs), f"arviz_forest_{name}")
        summary[name] = entry
    summary["comparison"] = rows
    summary["gbnf"] = "included" if "gbnf" in cfg.families else "not run (add to families)"
    return summary
