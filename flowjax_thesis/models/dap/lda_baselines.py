"""LDA baselines scored with the same document-completion estimator as DAPPER.

* scikit-learn's :class:`~sklearn.decomposition.LatentDirichletAllocation` (batch or online);
* gensim's ``LdaModel`` (optional: ``pip install flowjax_thesis[text]``).

Both are fit on the training corpus, infer the topic proportions of each test document from the
observed half of its tokens, and score the held-out half with
:func:`~flowjax_thesis.models.dap.evaluation.score_heldout` (document completion); the thesis's
held-out PWLL (sum_d log p(w_d) / sum_d N_d) is estimated as for DAPPER
(:func:`~flowjax_thesis.models.dap.evaluation.lda_heldout_pwll`).

The online learners (gensim, and scikit-learn with ``learning_method="online"``) see the training
documents in a seeded random order: the corpus is stored grouped by author, and mini-batches of one
author at a time bias stochastic updates (it cost gensim up to 0.8 nats).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from flowjax_thesis.models.dap.corpus import Corpus, split_tokens
from flowjax_thesis.models.dap.evaluation import score_heldout


def to_csr(corpus: Corpus) -> sp.csr_matrix:
    """Document-term matrix (D, V)."""
    return sp.csr_matrix(
        (
            np.asarray(corpus.counts, np.float64),
            np.asarray(corpus.word_ids),
            np.asarray(corpus.indptr),
        ),
        shape=(corpus.num_docs, corpus.vocab_size),
    )


def sklearn_lda(
    train: Corpus,
    num_topics: int,
    *,
    passes: int = 10,
    learning_method: str = "batch",
    batch_size: int = 256,
    seed: int = 0,
    n_jobs: int | None = 1,
):
    """Fits scikit-learn's LDA (priors 1/K). Returns ``(model, fit_seconds)``."""
    from sklearn.decomposition import LatentDirichletAllocation

    model = LatentDirichletAllocation(
        n_components=num_topics,
        learning_method=learning_method,
        max_iter=passes,
        batch_size=batch_size,
        random_state=seed,
        n_jobs=n_jobs,
    )
    x = to_csr(train)
    if learning_method == "online":
        x = x[np.random.default_rng(seed).permutation(train.num_docs)]
    t0 = time.perf_counter()
    model.fit(x)
    return model, time.perf_counter() - t0


def sklearn_completion_pwll(model, test: Corpus, seed: int = 0) -> dict:
    observed, heldout = split_tokens(test, seed=seed)
    theta = model.transform(to_csr(observed))
    theta = theta / theta.sum(axis=1, keepdims=True)
    tw = model.components_ / model.components_.sum(axis=1, keepdims=True)
    out = score_heldout(theta, tw, heldout)
    out.pop("per_doc")
    return out


def sklearn_heldout_pwll(model, test: Corpus, num_samples: int = 100, seed: int = 0) -> dict:
    """The thesis's held-out PWLL of a fitted scikit-learn LDA (whole test documents)."""
    from flowjax_thesis.models.dap.evaluation import lda_heldout_pwll

    gamma = model._unnormalized_transform(to_csr(test))  # variational Dirichlet parameters
    tw = model.components_ / model.components_.sum(axis=1, keepdims=True)
    return lda_heldout_pwll(
        gamma, model.doc_topic_prior_, tw, test, num_samples=num_samples, seed=seed
    )


def gensim_heldout_pwll(model, test: Corpus, num_samples: int = 100, seed: int = 0) -> dict:
    """The thesis's held-out PWLL of a fitted gensim LDA (whole test documents)."""
    from flowjax_thesis.models.dap.evaluation import lda_heldout_pwll

    _require_gensim()
    gamma = np.stack([model.inference([doc])[0][0] for doc in to_bow(test)])
    tw = model.get_topics()
    tw = tw / tw.sum(axis=1, keepdims=True)
    return lda_heldout_pwll(gamma, model.alpha, tw, test, num_samples=num_samples, seed=seed)


def _require_gensim():
    try:
        import gensim  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the gensim LDA baseline needs gensim: pip install flowjax_thesis[text]"
        ) from e


def to_bow(corpus: Corpus) -> list[list[tuple[int, float]]]:
    out = []
    for d in range(corpus.num_docs):
        w, c = corpus.doc(d)
        out.append(list(zip(w.tolist(), c.tolist(), strict=True)))
    return out


GENSIM_MODES = {"online": 1, "batch": 0}  # gensim's update_every


def gensim_lda(
    train: Corpus,
    num_topics: int,
    *,
    passes: int = 10,
    chunksize: int = 2000,
    mode: str = "online",
    seed=0,
):
    """Fits gensim's LdaModel (priors 1/K). Returns ``(model, fit_seconds)``.

    ``mode="online"`` (gensim's default) is online VB (Hoffman et al. 2010): one global update
    per ``chunksize`` documents with gensim's step sizes (offset 1, decay 0.5); ``"batch"`` is
    batch VB, one update per pass over the corpus, the algorithm of scikit-learn's
    ``learning_method="batch"``. With 10 passes over many short documents the online schedule
    stops short of convergence (``dapper-sotu`` reports both modes beside scikit-learn)."""
    _require_gensim()
    from gensim.models import LdaModel

    if mode not in GENSIM_MODES:
        raise ValueError(f"gensim LDA mode must be one of {sorted(GENSIM_MODES)}, got {mode!r}")
    bow = to_bow(train)
    bow = [bow[i] for i in np.random.default_rng(seed).permutation(len(bow))]
    t0 = time.perf_counter()
    model = LdaModel(
        corpus=bow,
        num_topics=num_topics,
        id2word={i: w for i, w in enumerate(train.vocab)},
        passes=passes,
        chunksize=chunksize,
        update_every=GENSIM_MODES[mode],
        random_state=seed,
        alpha="symmetric",
        eta=1.0 / num_topics,
    )
    return model, time.perf_counter() - t0


def gensim_completion_pwll(model, test: Corpus, seed: int = 0) -> dict:
    _require_gensim()
    observed, heldout = split_tokens(test, seed=seed)
    k = model.num_topics
    theta = np.zeros((test.num_docs, k))
    for d, doc in enumerate(to_bow(observed)):
        gamma, _ = model.inference([doc])
        theta[d] = gamma[0] / gamma[0].sum()
    tw = model.get_topics()
    tw = tw / tw.sum(axis=1, keepdims=True)
    out = score_heldout(theta, tw, heldout)
    out.pop("per_doc")
    return out
