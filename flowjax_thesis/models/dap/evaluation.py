"""Evaluation of DAP/DAPPER: held-out per-word log-likelihood (PWLL) and persona summaries.

Three PWLL estimators:

* **the thesis's definition** (section 3.8.1.4), PWLL = sum_d log p(w_d) / sum_d N_d over the
  held-out documents (:func:`heldout_pwll`). log p(w_d) is estimated by importance sampling with
  the topics at their posterior mean beta_bar: for DAPPER theta ~ q(theta_d) = N(m_d, v_d) from
  local inference on the whole document, weighted by p(w_d | theta) p(theta) / q(theta) with the
  persona-mixture prior p(theta) = sum_p E[kappa_ap] N(theta | alpha_tp, (s_t + Var alpha_t) I);
  for LDA (:func:`lda_heldout_pwll`) theta ~ Dir(gamma_d), the prior Dir(alpha). A share
  :data:`DEFENSIVE` of the samples comes from the prior (a defensive mixture proposal, so that
  the importance weights stay bounded when q's tails are lighter than the posterior's). The same
  estimator (S samples, log-mean-exp) scores every model; by Jensen it is a stochastic lower
  bound on log p(w_d) that tightens with S.

* **document completion** (:func:`completion_pwll`): each test document's tokens are halved at
  random (:func:`~flowjax_thesis.models.dap.corpus.split_tokens`); its topic proportions are
  inferred from the first half under the learned global parameters, and the second half is
  scored, ``sum_n log sum_k E[theta_k] beta_bar_{k, w_n} / N_heldout``. The same estimator scores
  the LDA baselines (:mod:`lda_baselines`) given their document-topic and topic-word matrices.
* **the ELBO** (:func:`elbo_pwll`, what the released DAPPER code reports for the thesis's
  definition): the per-document ELBO after local inference on the whole test document, summed
  and divided by the number of test tokens; a lower bound of the thesis's PWLL.

The thesis's PWLL scores words the local inference has seen (it is the marginal likelihood of
whole held-out documents); completion never scores a word it conditioned on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_thesis.models.dap.corpus import Corpus, split_tokens
from flowjax_thesis.models.dap.estep import infer_documents
from flowjax_thesis.models.dap.state import DapConfig, DapState


def topic_word(state: DapState) -> np.ndarray:
    """Posterior-mean topic-word matrix E[beta] = lambda / sum lambda, (K, V)."""
    lam = np.asarray(state.lam, np.float64)
    return lam / lam.sum(axis=1, keepdims=True)


@functools.partial(jax.jit, static_argnums=2)
def _expected_softmax(m, v, num_samples: int, key):
    eps = jax.random.normal(key, (num_samples,) + m.shape)
    return jnp.mean(jax.nn.softmax(m + jnp.sqrt(v) * eps, axis=-1), axis=0)


def expected_proportions(m, v, num_samples: int = 64, seed: int = 0) -> np.ndarray:
    """E[softmax(theta)] for theta ~ N(m, diag v), by Monte Carlo; (D, K)."""
    if num_samples <= 0:
        return np.asarray(jax.nn.softmax(jnp.asarray(m), axis=-1))
    return np.asarray(
        _expected_softmax(jnp.asarray(m), jnp.asarray(v), num_samples, jax.random.PRNGKey(seed))
    )


def score_heldout(doc_topic: np.ndarray, topic_word_mat: np.ndarray, heldout: Corpus) -> dict:
    """Sum and per-word mean of log p(w) = log sum_k doc_topic[d,k] topic_word[k,w] over tokens."""
    doc_topic = np.asarray(doc_topic, np.float64)
    tw = np.asarray(topic_word_mat, np.float64)
    if doc_topic.shape != (heldout.num_docs, tw.shape[0]):
        raise ValueError(
            f"doc_topic must have shape ({heldout.num_docs}, {tw.shape[0]}), got {doc_topic.shape}"
        )
    if tw.shape[1] != heldout.vocab_size:
        raise ValueError(f"topic_word has {tw.shape[1]} words, corpus has {heldout.vocab_size}")
    indptr = np.asarray(heldout.indptr)
    rows = np.repeat(np.arange(heldout.num_docs), np.diff(indptr))
    words = np.asarray(heldout.word_ids)
    counts = np.asarray(heldout.counts, np.float64)
    probs = np.einsum("nk,kn->n", doc_topic[rows], tw[:, words])
    ll = counts * np.log(np.clip(probs, 1e-300, None))
    per_doc = np.bincount(rows, weights=ll, minlength=heldout.num_docs)
    total = float(ll.sum())
    tokens = float(counts.sum())
    return {"loglik": total, "tokens": tokens, "pwll": total / max(tokens, 1.0), "per_doc": per_doc}


def completion_pwll(
    cfg: DapConfig,
    state: DapState,
    test: Corpus,
    *,
    train: Corpus | None = None,
    seed: int = 0,
    num_samples: int = 64,
    chunk: int = 256,
) -> dict:
    """Document-completion PWLL of DAPPER on ``test`` (see the module docstring)."""
    if train is not None:
        check_compatible(train, test)
    observed, heldout = split_tokens(test, seed=seed)
    loc = infer_documents(cfg, state, observed, chunk=chunk)
    props = expected_proportions(loc.m, loc.v, num_samples, seed)
    out = score_heldout(props, topic_word(state), heldout)
    out.pop("per_doc")
    return out


def elbo_pwll(cfg: DapConfig, state: DapState, test: Corpus, chunk: int = 256) -> float:
    """Summed per-document ELBO over test tokens (the released code's held-out number)."""
    loc = infer_documents(cfg, state, test, chunk=chunk)
    return float(np.sum(loc.elbo) / max(test.num_tokens, 1))


def _log_mean_exp(x, axis=0):
    return jax.nn.logsumexp(x, axis=axis) - jnp.log(x.shape[axis])


# share of the importance samples drawn from the prior (defensive importance sampling,
# Hesterberg 1995): the weights stay bounded by p(w | theta) / DEFENSIVE whatever the tails of q
DEFENSIVE = 0.2


# Jitted (below, ``_dapper_log_marginal_jit``). An earlier jax returned estimates 0.05 nats per
# word lower under jit than eagerly on NewsArticles; at jax 0.10.2 both agree there (-7.895090
# both, 3 epochs, K = 25, P = 15; largest per-document difference 0.006 nats of ~-2,000) and on a
# trained synthetic model (a test compares them), and the eager value matches numerical
# integration (tests/dap/test_heldout.py).
def _dapper_log_marginal(num_samples, key, m, v, prior_mean, prior_var, log_w, tw_d, counts):
    """IS estimate of log p(w_d) per document; shapes (B, K), (B, K, P), (B,), (B, P),
    (B, K, L), (B, L)."""
    n_prior = int(round(DEFENSIVE * num_samples))
    k1, k2, k3 = jax.random.split(key, 3)
    theta_q = m + jnp.sqrt(v) * jax.random.normal(k1, (num_samples - n_prior,) + m.shape)
    persona = jax.random.categorical(k2, log_w, shape=(n_prior,) + log_w.shape[:1])  # (S0, B)
    mean_p = jnp.take_along_axis(prior_mean[None], persona[:, :, None, None], axis=3)[
        ..., 0
    ]  # (S0, B, K)
    sd = jnp.sqrt(prior_var)[None, :, None]
    theta_p = mean_p + sd * jax.random.normal(k3, mean_p.shape)
    theta = jnp.concatenate([theta_q, theta_p])  # (S, B, K)
    log_q = jnp.sum(jax.scipy.stats.norm.logpdf(theta, m, jnp.sqrt(v)), axis=-1)
    comp = jax.scipy.stats.norm.logpdf(theta[..., None], prior_mean[None], sd[..., None])
    log_prior = jax.nn.logsumexp(log_w[None] + jnp.sum(comp, axis=2), axis=-1)  # (S, B)
    log_prop = jnp.logaddexp(jnp.log1p(-DEFENSIVE) + log_q, jnp.log(DEFENSIVE) + log_prior)
    probs = jnp.einsum("sbk,bkl->sbl", jax.nn.softmax(theta, axis=-1), tw_d)
    log_lik = jnp.sum(counts[None] * jnp.log(jnp.clip(probs, 1e-30)), axis=-1)
    return _log_mean_exp(log_lik + log_prior - log_prop)


_dapper_log_marginal_jit = jax.jit(_dapper_log_marginal, static_argnums=0)


def heldout_pwll(
    cfg: DapConfig,
    state: DapState,
    test: Corpus,
    *,
    num_samples: int = 100,
    seed: int = 0,
    chunk: int = 128,
) -> dict:
    """The thesis's held-out PWLL of DAPPER, sum_d log p(w_d) / sum_d N_d (module docstring).

    Returns ``{"loglik", "tokens", "pwll", "per_doc"}``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples}")
    loc = infer_documents(cfg, state, test, chunk=chunk)
    tw = jnp.asarray(topic_word(state), jnp.float32)
    log_kappa = np.log(author_persona_probs(state))
    doc_var = np.asarray(state.doc_var) + np.asarray(state.alpha_var)
    alpha = np.asarray(state.alpha)
    key = jax.random.PRNGKey(seed)
    per_doc = np.empty(test.num_docs)
    for lo in range(0, test.num_docs, chunk):
        ids = np.arange(lo, min(lo + chunk, test.num_docs))
        words, counts, authors, times, _ = test.batch(ids, pad_docs_to=chunk)
        n = len(ids)
        pad = lambda x, n=n: np.concatenate([x, np.repeat(x[-1:], chunk - n, 0)])  # noqa: E731
        out = _dapper_log_marginal_jit(
            num_samples,
            jax.random.fold_in(key, lo),
            jnp.asarray(pad(loc.m[ids])),
            jnp.asarray(pad(loc.v[ids])),
            jnp.asarray(alpha[times]),
            jnp.asarray(doc_var[times]),
            jnp.asarray(log_kappa[authors]),
            jnp.take(tw, jnp.asarray(words), axis=1).transpose(1, 0, 2),
            jnp.asarray(counts),
        )
        per_doc[ids] = np.asarray(out)[:n]
    total, tokens = float(per_doc.sum()), float(test.num_tokens)
    return {"loglik": total, "tokens": tokens, "pwll": total / max(tokens, 1.0), "per_doc": per_doc}


def _lda_log_marginal(num_samples, key, gamma, prior, tw_d, counts):
    """IS estimate of log p(w_d) under LDA with the defensive proposal (module docstring)."""
    n_prior = int(round(DEFENSIVE * num_samples))
    k1, k2 = jax.random.split(key)
    shape = gamma.shape
    logg = jnp.concatenate(
        [
            jax.random.loggamma(k1, gamma, (num_samples - n_prior,) + shape),
            jax.random.loggamma(k2, jnp.broadcast_to(prior, shape), (n_prior,) + shape),
        ]
    )
    log_theta = logg - jax.nn.logsumexp(logg, axis=-1, keepdims=True)  # (S, B, K)

    def log_dir(a):
        return (
            jax.scipy.special.gammaln(jnp.sum(a, -1))
            - jnp.sum(jax.scipy.special.gammaln(a), -1)
            + jnp.sum((a - 1) * log_theta, -1)
        )

    log_prior = log_dir(prior)
    log_prop = jnp.logaddexp(jnp.log1p(-DEFENSIVE) + log_dir(gamma), jnp.log(DEFENSIVE) + log_prior)
    probs = jnp.einsum("sbk,bkl->sbl", jnp.exp(log_theta), tw_d)
    log_lik = jnp.sum(counts[None] * jnp.log(jnp.clip(probs, 1e-30)), axis=-1)
    return _log_mean_exp(log_lik + log_prior - log_prop)


# jitted like DAPPER's (a test compares it with the eager function)
_lda_log_marginal_jit = jax.jit(_lda_log_marginal, static_argnums=0)


def lda_heldout_pwll(
    gamma: np.ndarray,
    prior,
    topic_word_mat: np.ndarray,
    test: Corpus,
    *,
    num_samples: int = 100,
    seed: int = 0,
    chunk: int = 128,
) -> dict:
    """The thesis's held-out PWLL of an LDA model: ``gamma`` (D, K) are the variational
    Dirichlet parameters of the test documents (inferred from the whole documents), ``prior``
    the document-topic prior alpha (scalar or (K,)), ``topic_word_mat`` (K, V) the topics."""
    gamma = np.asarray(gamma, np.float64)
    tw = np.asarray(topic_word_mat, np.float64)
    if gamma.shape != (test.num_docs, tw.shape[0]):
        raise ValueError(
            f"gamma: expected shape ({test.num_docs}, {tw.shape[0]}), got {gamma.shape}"
        )
    if num_samples < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples}")
    prior = jnp.broadcast_to(jnp.asarray(prior, jnp.float32), (tw.shape[0],))
    tw = jnp.asarray(tw, jnp.float32)
    key = jax.random.PRNGKey(seed)
    per_doc = np.empty(test.num_docs)
    for lo in range(0, test.num_docs, chunk):
        ids = np.arange(lo, min(lo + chunk, test.num_docs))
        words, counts, *_ = test.batch(ids, pad_docs_to=chunk)
        n = len(ids)
        g = np.concatenate([gamma[ids], np.ones((chunk - n, gamma.shape[1]))])
        out = _lda_log_marginal_jit(
            num_samples,
            jax.random.fold_in(key, lo),
            jnp.asarray(g, jnp.float32),
            prior,
            jnp.take(tw, jnp.asarray(words), axis=1).transpose(1, 0, 2),
            jnp.asarray(counts),
        )
        per_doc[ids] = np.asarray(out)[:n]
    total, tokens = float(per_doc.sum()), float(test.num_tokens)
    return {"loglik": total, "tokens": tokens, "pwll": total / max(tokens, 1.0), "per_doc": per_doc}


# --- persona summaries -------------------------------------------------------------------------
def top_words(topic_word_mat: np.ndarray, vocab, n: int = 10) -> list[list[str]]:
    """The ``n`` most probable words of each topic."""
    order = np.argsort(-np.asarray(topic_word_mat), axis=1)[:, :n]
    return [[vocab[i] for i in row] for row in order]


def persona_topic_weights(state: DapState) -> np.ndarray:
    """softmax over topics of alpha_{t,p}: (T, P, K)."""
    alpha = np.asarray(state.alpha, np.float64).transpose(0, 2, 1)
    alpha = alpha - alpha.max(-1, keepdims=True)
    w = np.exp(alpha)
    return w / w.sum(-1, keepdims=True)


def persona_top_topics(state: DapState, n: int = 3) -> np.ndarray:
    """The ``n`` topics with the largest time-averaged weight for each persona: (P, n)."""
    w = persona_topic_weights(state).mean(axis=0)
    return np.argsort(-w, axis=1)[:, :n]


def distinct_top_topics(state: DapState, n: int = 3) -> int:
    """Number of distinct topics among the personas' top ``n`` (the RVI diversity measure)."""
    return int(len(np.unique(persona_top_topics(state, n))))


def author_persona_probs(state: DapState) -> np.ndarray:
    """E[kappa_a] = delta_a / sum delta_a, (A, P)."""
    d = np.asarray(state.delta, np.float64)
    return d / d.sum(axis=1, keepdims=True)


def share_concentrated(state: DapState, threshold: float = 0.9, authors=None) -> float:
    """Share of authors whose largest persona probability exceeds ``threshold``."""
    probs = author_persona_probs(state)
    if authors is not None:
        probs = probs[np.asarray(authors)]
    return float(np.mean(probs.max(axis=1) > threshold))


def persona_usage(state: DapState, threshold: float = 0.9, min_mass: float = 0.05) -> dict:
    """How the authors spread over the personas (the collapse diagnostics of issue 14).

    ``authors_concentrated``: share of authors with one persona above ``threshold`` (the thesis's
    71%); ``personas_dominant``: distinct personas that are some author's most probable one;
    ``personas_with_mass``: personas holding at least ``min_mass`` of the authors' average
    probability; ``largest_dominant_share``: share of authors whose most probable persona is the
    most common one (1.0: every author on the same persona, the collapse).
    """
    probs = author_persona_probs(state)
    dominant = probs.argmax(axis=1)
    return {
        "authors_concentrated": float(np.mean(probs.max(axis=1) > threshold)),
        "personas_dominant": int(len(np.unique(dominant))),
        "personas_with_mass": int(np.sum(probs.mean(axis=0) >= min_mass)),
        "largest_dominant_share": float(np.bincount(dominant).max() / len(dominant)),
    }


def most_used_personas(state: DapState, n: int) -> list[int]:
    """The ``n`` personas with the largest average author probability, most used first."""
    return [int(p) for p in np.argsort(-author_persona_probs(state).mean(axis=0))[:n]]


def plot_personas(state: DapState, vocab, personas=None, n_topics: int = 3, n_words: int = 4):
    """Figure like thesis Figures 7-8: the three strongest topics of each persona over time
    (``personas``: by default the six most used, :func:`most_used_personas`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = persona_topic_weights(state)
    num_p = w.shape[1]
    personas = most_used_personas(state, min(num_p, 6)) if personas is None else list(personas)
    labels = [" ".join(ws) for ws in top_words(topic_word(state), vocab, n_words)]
    tv = np.asarray(state.time_values)
    ncol = min(3, len(personas))
    nrow = int(np.ceil(len(personas) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.2 * nrow), squeeze=False)
    tops = persona_top_topics(state, n_topics)
    for ax, p in zip(axes.ravel(), personas, strict=False):
        for k in tops[p]:
            ax.plot(tv, w[:, p, k], marker="o", ms=3, label=f"{k}: {labels[k]}")
        ax.set_title(f"persona {p}")
        ax.set_xlabel("time")
        ax.set_ylabel("topic weight")
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.ravel()[len(personas) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def match_topics(estimated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of topics by L1 distance; returns (assignment, matched L1 distances)."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(np.asarray(estimated)[:, None, :] - np.asarray(truth)[None]).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(cols), int)
    perm[cols] = rows
    return perm, cost[rows, cols][np.argsort(cols)]


def persona_accuracy(estimated: np.ndarray, truth: np.ndarray, num_personas: int) -> float:
    """Share of authors whose (label-matched) dominant persona equals the planted one."""
    from scipy.optimize import linear_sum_assignment

    conf = np.zeros((num_personas, num_personas))
    np.add.at(conf, (np.asarray(estimated), np.asarray(truth)), 1)
    r, c = linear_sum_assignment(-conf)
    return float(conf[r, c].sum() / len(estimated))


def check_compatible(train: Corpus, other: Corpus) -> None:
    """Raises if ``other`` cannot be scored by a model trained on ``train``."""
    if other.num_docs == 0:
        raise ValueError("empty evaluation corpus")
    if other.vocab != train.vocab:
        raise ValueError("evaluation corpus must share the training vocabulary")
    if other.author_names != train.author_names:
        raise ValueError(
            "evaluation corpus must use the training author table; DAP learns a persona "
            "distribution per training author, so a test author never seen in training has none"
        )
    if other.num_times != train.num_times or not np.allclose(other.time_values, train.time_values):
        raise ValueError("evaluation corpus must share the training time grid")
    trained = np.bincount(np.asarray(train.authors), minlength=train.num_authors) > 0
    unseen = ~trained[np.asarray(other.authors)]
    if unseen.any():
        names = sorted({other.author_names[a] for a in np.asarray(other.authors)[unseen]})
        raise ValueError(
            f"{len(names)} evaluation author(s) have no training document (e.g. {names[:3]}): "
            "their persona distribution was never learned"
        )
