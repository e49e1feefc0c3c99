"""DAPPER on the State of the Union addresses (issue 15 item 5; registered on import).

Documents are the addresses' paragraphs (``unit="paragraph"``, the smoke profile) or fixed blocks
of ``block_words`` words (``unit="block"``; the cpu profile uses 50-word blocks, 40,356
documents, so that the corpus also serves the mini-batch criterion of issue 14); the author is the
president, the time is the year.
Each seed draws its own per-president 90/10 train/test split and initialisation; DAPPER and the
scikit-learn and gensim LDA baselines are scored on the same held-out tokens by document
completion (:func:`flowjax_thesis.models.dap.evaluation.completion_pwll`: topic proportions
inferred from half of each test paragraph's tokens, per-word log-likelihood of the other half).
The appendix-C DAP baseline (:func:`flowjax_thesis.models.dap.vem.fit_dap_vem`, original
variational EM, same model, settings and metric; ``dap_vem=False`` leaves it out) trains on every
seed's split beside DAPPER, and so does DAPPER without RVI (``rho0_row``: the row "DAPPER rho=0",
with the persona usage of every full-batch model in ``persona_usage_by_model``). gensim runs in
each of ``gensim_modes``: online VB (its default) and batch VB (scikit-learn's algorithm).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from flowjax_thesis.experiments import register
from flowjax_thesis.experiments.dapper import mean_std, minibatch_criterion, train_dap_model

_PAPER = {
    "source": "thesis chapter 3 (Giaquinto), Table 2 (CaringBridge) and Table 3 (Signal Media); "
    "the thesis has no State of the Union experiment",
    "table2_cb_subset_pwll_final": {"DAPPER full batch": -6.49, "LDA": -9.23},
    "table3_sm_blogs_pwll_P15_K25_full": -5.65,
    "claim": "DAPPER's held-out per-word log-likelihood beats LDA's",
}


def _dap_config(cfg: DapperSotuSettings):
    from flowjax_thesis.models.dap import DapConfig

    return DapConfig(
        num_topics=cfg.num_topics,
        num_personas=cfg.num_personas,
        rho_reg=cfg.rho_reg,
        doc_variance=cfg.doc_variance if cfg.doc_variance > 0 else None,
        process_noise=cfg.process_noise,
        obs_noise=cfg.obs_noise,
        local_max_iter=cfg.local_max_iter,
        tau0=cfg.tau0,
        kappa=cfg.kappa,
    )


def plot_persona_years(state, vocab, first_year: int, personas, n_topics: int = 4):
    """Topic proportions of a few personas over the years (the strongest ``n_topics`` each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowjax_thesis.models.dap import evaluation as ev

    w = ev.persona_topic_weights(state)  # (T, P, K)
    years = first_year + np.asarray(state.time_values)
    labels = [" ".join(ws) for ws in ev.top_words(ev.topic_word(state), vocab, 4)]
    tops = ev.persona_top_topics(state, n_topics)
    personas = list(personas)
    fig, axes = plt.subplots(len(personas), 1, figsize=(9, 2.6 * len(personas)), squeeze=False)
    for ax, p in zip(axes[:, 0], personas, strict=True):
        for k in tops[p]:
            ax.plot(years, w[:, p, k], lw=1.2, label=f"topic {k}: {labels[k]}")
        ax.set_title(f"persona {p}")
        ax.set_ylabel("topic proportion")
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    axes[-1, 0].set_xlabel("year")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class DapperSotuSettings:
    """Settings of ``dapper-sotu``; the defaults are the smoke profile."""

    unit: str = "paragraph"
    block_words: int = 200
    rho_reg: float = 0.2
    doc_variance: float = 1.0
    process_noise: float = 0.2
    obs_noise: float = 0.8
    tau0: float = 10.0
    kappa: float = 0.7
    chunk: int = 256
    personas_in_figure: int = 4
    first_year: int = 1990
    last_year: int = 2026
    vocab_size: int = 500
    num_topics: int = 5
    num_personas: int = 3
    epochs: int = 2
    local_max_iter: int = 10
    lda_passes: int = 2
    gensim: bool = False
    # gensim's online VB (its default) and batch VB (scikit-learn's algorithm): online stops
    # short of convergence at 10 passes over the 50-word blocks
    gensim_modes: tuple[str, ...] = ("online", "batch")
    # a full-batch DAPPER row without RVI (rho = 0) beside the rho_reg rows
    rho0_row: bool = True
    dap_vem: bool = True
    # mini-batch DAPPER rows beside full batch (issue 14's criterion on a >= 30,000-document
    # corpus: ``--set unit=block --set block_words=50`` gives 40,356 documents)
    batch_sizes: tuple[int, ...] = ()
    seeds: tuple[int, ...] = (0,)


DAPPER_SOTU_SMOKE = DapperSotuSettings()
# cpu: every address since 1790 cut into 50-word blocks (40,356 documents: the >= 30,000-document
# corpus of issue 14's mini-batch criterion), full batch beside mini-batches of 1024, 3 seeds
DAPPER_SOTU_CPU = replace(
    DAPPER_SOTU_SMOKE,
    unit="block",
    block_words=50,
    first_year=1790,
    vocab_size=5000,
    num_topics=20,
    num_personas=8,
    epochs=15,
    local_max_iter=30,
    lda_passes=10,
    gensim=True,
    batch_sizes=(1024,),
    seeds=(0, 1, 2),
)
DAPPER_SOTU_FULL = replace(
    DAPPER_SOTU_CPU,
    vocab_size=10000,
    num_topics=50,
    num_personas=15,
    epochs=30,
    local_max_iter=50,
    lda_passes=30,
)


@register(
    "dapper-sotu",
    description=(
        "DAPPER vs the appendix-C DAP baseline and scikit-learn and gensim LDA on the State of "
        "the Union addresses 1790-2026 (documents = paragraphs or 50-word blocks at the cpu "
        "profile, author = president, time = year; `flowjax-thesis data get "
        "sotu`): held-out per-word log-likelihood by document completion over seeds, and the "
        "personas' topic proportions over the years."
    ),
    paper=_PAPER,
    smoke=DAPPER_SOTU_SMOKE,
    cpu=DAPPER_SOTU_CPU,
    full=DAPPER_SOTU_FULL,
)
def dapper_sotu(cfg: DapperSotuSettings, run) -> dict:
    from flowjax_thesis.data.fetch import SOURCES, cached_file
    from flowjax_thesis.data.sotu import load_sotu, sotu_corpus
    from flowjax_thesis.models.dap import evaluation as ev
    from flowjax_thesis.models.dap import lda_baselines as lb
    from flowjax_thesis.models.dap import split_by_author

    if any(m not in lb.GENSIM_MODES for m in cfg.gensim_modes):
        raise ValueError(
            f"gensim_modes must hold {sorted(lb.GENSIM_MODES)}, got {cfg.gensim_modes!r}"
        )

    corpus = sotu_corpus(
        unit=cfg.unit,
        block_words=cfg.block_words,
        vocab_size=cfg.vocab_size,
        first_year=cfg.first_year,
        last_year=cfg.last_year,
    )
    origin = cached_file("sotu") or "the installed sotu package"
    doc_unit = "paragraphs" if cfg.unit == "paragraph" else f"{cfg.block_words}-word blocks"
    run.print(
        f"data: {SOURCES['sotu'].description} ({origin}), years {cfg.first_year}-"
        f"{cfg.last_year}: {corpus.num_docs} {doc_unit}, {corpus.num_tokens} tokens, "
        f"{corpus.num_authors} presidents, V={corpus.vocab_size}, T={corpus.num_times} years"
    )
    dcfg = _dap_config(cfg)
    k = cfg.num_topics
    gensim_rows = {m: f"gensim LDA ({m} VB)" for m in cfg.gensim_modes} if cfg.gensim else {}
    # name: (model, batch size or None for full batch, rho)
    dap_models = {"DAPPER": ("dapper", None, cfg.rho_reg)}
    if cfg.rho0_row and cfg.rho_reg != 0:
        dap_models["DAPPER rho=0"] = ("dapper", None, 0.0)
    dap_models |= {f"DAPPER batch {b}": ("dapper", b, cfg.rho_reg) for b in cfg.batch_sizes}
    if cfg.dap_vem:
        dap_models["DAP (appendix C)"] = ("dap-vem", None, cfg.rho_reg)
    scores: dict[str, list[float]] = {
        n: [] for n in [*dap_models, "sklearn LDA", *gensim_rows.values()]
    }
    seconds: dict[str, list[float]] = {name: [] for name in scores}
    thesis_scores: dict[str, list[float]] = {}
    per_seed, best = [], None
    for seed in cfg.seeds:
        train, test = split_by_author(corpus, 0.1, seed=seed)

        sk, sk_secs = lb.sklearn_lda(train, k, passes=cfg.lda_passes, seed=seed)
        row = {
            "seed": seed,
            "train_docs": train.num_docs,
            "test_docs": test.num_docs,
            "sklearn LDA": lb.sklearn_completion_pwll(sk, test, seed)["pwll"],
        }
        # the thesis's held-out PWLL, sum_d log p(w_d) / sum_d N_d (importance sampled)
        heldout = {"sklearn LDA": lb.sklearn_heldout_pwll(sk, test, seed=seed)["pwll"]}
        states = {}
        for name, (tag, batch, rho) in dap_models.items():
            tags = {"model": tag, "seed": seed} | ({"batch": batch} if batch else {})
            if rho != cfg.rho_reg:
                tags["rho"] = rho
            mcfg = replace(dcfg, rho_reg=rho)
            state, epochs = train_dap_model(
                run, tags, mcfg, train, test,
                epochs=cfg.epochs, batch_size=batch, chunk=cfg.chunk, seed=seed,
                vem=tag == "dap-vem",
            )  # fmt: skip
            curve = [e["pwll"] for e in epochs]
            row[name], row[f"{name}_pwll_per_epoch"] = curve[-1], curve
            heldout[name] = ev.heldout_pwll(mcfg, state, test, seed=seed)["pwll"]
            seconds[name].append(epochs[-1]["train_seconds"])
            states[name] = state
        dapper_pwll = row["DAPPER"]
        seconds["sklearn LDA"].append(sk_secs)
        for mode, gname in gensim_rows.items():
            try:
                gm, g_secs = lb.gensim_lda(train, k, passes=cfg.lda_passes, mode=mode, seed=seed)
            except ImportError as err:
                run.print(f"gensim baseline skipped: {err}")
                break
            row[gname] = lb.gensim_completion_pwll(gm, test, seed)["pwll"]
            heldout[gname] = lb.gensim_heldout_pwll(gm, test, seed=seed)["pwll"]
            seconds[gname].append(g_secs)
        row["thesis_pwll"] = heldout
        for name in scores:
            if name in row:
                scores[name].append(row[name])
            if name in heldout:
                thesis_scores.setdefault(name, []).append(heldout[name])
        run.print(
            f"seed {seed}: PWLL DAPPER {dapper_pwll:.3f}, sklearn LDA {row['sklearn LDA']:.3f}"
            + (f", DAP (appendix C) {row['DAP (appendix C)']:.3f}" if cfg.dap_vem else "")
            + "".join(f", {g} {row[g]:.3f}" for g in gensim_rows.values() if g in row)
        )
        per_seed.append(row)
        if best is None or dapper_pwll > best[0]:
            best = (dapper_pwll, states, train)
    _, best_states, train = best
    state = best_states["DAPPER"]
    table_rows = [
        "| model | completion PWLL (mean +- sd over seeds) | thesis held-out PWLL | fit seconds |",
        "| --- | --- | --- | --- |",
    ]
    summary_scores = {name: mean_std(vals) for name, vals in scores.items() if vals}
    for name, ms in summary_scores.items():
        th = mean_std(thesis_scores.get(name, []))
        th_cell = "-" if th["mean"] is None else f"{th['mean']:.3f} +- {th['std']:.3f}"
        secs = float(np.mean(seconds[name])) if seconds[name] else float("nan")
        table_rows.append(
            f"| {name} | {ms['mean']:.3f} +- {ms['std']:.3f} | {th_cell} | {secs:.1f} |"
        )
    table = "\n".join(table_rows)
    run.print(table)
    probs = ev.author_persona_probs(state)
    persona_of = {
        train.author_names[a]: int(probs[a].argmax()) for a in range(len(train.author_names))
    }
    counts = np.bincount(list(persona_of.values()), minlength=cfg.num_personas)
    shown = list(np.argsort(-counts)[: cfg.personas_in_figure])
    # time values are years since the first address kept
    first_kept = min(r["year"] for r in load_sotu() if r["year"] >= cfg.first_year)
    run.save_figure(
        plot_persona_years(state, train.vocab, first_kept, shown), "persona_topics_over_years"
    )
    top = ev.top_words(ev.topic_word(state), train.vocab, 8)
    return {
        "data": {
            "corpus": "State of the Union (sotu 0.1.2)",
            "documents": doc_unit,
            "docs": corpus.num_docs,
            "tokens": corpus.num_tokens,
            "presidents": corpus.num_authors,
            "vocab": corpus.vocab_size,
            "years": corpus.num_times,
        },
        "pwll": summary_scores,
        "pwll_thesis_definition": {n: mean_std(v) for n, v in thesis_scores.items()},
        "fit_seconds": {n: v for n, v in seconds.items() if v},
        "per_seed": per_seed,
        "table": table,
        # RVI's effect on this corpus: full-batch DAPPER at rho_reg minus DAPPER at rho = 0
        "rvi": (
            {
                "rho": cfg.rho_reg,
                "gain_nats": summary_scores["DAPPER"]["mean"]
                - summary_scores["DAPPER rho=0"]["mean"],
            }
            if "DAPPER rho=0" in summary_scores
            else None
        ),
        "dapper_beats_sklearn_lda_every_seed": all(
            r["DAPPER"] > r["sklearn LDA"] for r in per_seed
        ),
        "personas_in_figure": [int(p) for p in shown],
        "president_persona": persona_of,
        "presidents_per_persona": counts.tolist(),
        "top_words": [" ".join(ws) for ws in top],
        "persona_top_topics": ev.persona_top_topics(state).tolist(),
        "authors_concentrated_gt_0.9": ev.share_concentrated(state),
        "persona_usage": ev.persona_usage(state),
        # persona usage of every full-batch model of the best seed (RVI's effect: DAPPER rho=0)
        "persona_usage_by_model": {
            n: ev.persona_usage(st) for n, st in best_states.items() if dap_models[n][1] is None
        },
        "minibatch_criterion": minibatch_criterion(
            [{n: r[f"{n}_pwll_per_epoch"] for n in dap_models} for r in per_seed],
            "DAPPER",
            {f"batch {b}": f"DAPPER batch {b}" for b in cfg.batch_sizes},
        ),
    }
