"""The LDA baselines of the ``dapper-*`` tables: gensim's batch mode is the same algorithm as
scikit-learn's batch LDA (two independent implementations must score alike), and a mode gensim
does not have is refused by name."""

import numpy as np
import pytest

from flowjax_thesis.models.dap import lda_baselines as lb
from flowjax_thesis.models.dap.corpus import from_token_lists

pytest.importorskip("gensim")


def _lda_corpus(num_docs: int, seed: int):
    """Documents drawn from a 3-topic LDA over 30 words (each topic on its own 10 words, a
    little mass elsewhere), 20-40 tokens each."""
    rng = np.random.default_rng(seed)
    topics = np.full((3, 30), 0.02 / 20)
    for k in range(3):
        topics[k, 10 * k : 10 * k + 10] = 0.098
    topics /= topics.sum(axis=1, keepdims=True)
    docs = []
    for _ in range(num_docs):
        theta = rng.dirichlet(np.full(3, 0.3))
        z = rng.choice(3, size=rng.integers(20, 41), p=theta)
        docs.append([int(rng.choice(30, p=topics[k])) for k in z])
    n = len(docs)
    return from_token_lists(docs, [0] * n, [0] * n, [f"w{i}" for i in range(30)])


def test_gensim_batch_mode_scores_like_scikit_learn_batch_lda():
    train, test = _lda_corpus(400, 0), _lda_corpus(100, 1)
    sk, _ = lb.sklearn_lda(train, 3, passes=30, seed=0)
    gm, _ = lb.gensim_lda(train, 3, passes=30, mode="batch", seed=0)
    sk_pwll = lb.sklearn_completion_pwll(sk, test, 0)["pwll"]
    gm_pwll = lb.gensim_completion_pwll(gm, test, 0)["pwll"]
    assert sk_pwll > np.log(1 / 30) + 0.3  # well above the uniform model (-3.40 nats per word)
    assert abs(gm_pwll - sk_pwll) < 0.03
    sk_th = lb.sklearn_heldout_pwll(sk, test, seed=0)["pwll"]
    gm_th = lb.gensim_heldout_pwll(gm, test, seed=0)["pwll"]
    assert abs(gm_th - sk_th) < 0.03


def test_gensim_mode_is_checked_by_name():
    with pytest.raises(ValueError, match="gensim LDA mode must be one of"):
        lb.gensim_lda(_lda_corpus(5, 0), 2, mode="stochastic")
