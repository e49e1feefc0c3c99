"""A synthetic corpus drawn from the DAP generative process (thesis section 3.3), with the truth.

Each author has a dominant persona (kappa_a puts ``persona_purity`` on it); persona-topic
trajectories alpha_{t,p} start at N(0, alpha_scale^2) and follow a Brownian motion on an irregular
time grid; document topic proportions are theta ~ N(alpha_t x, doc_variance I) and words follow
the logistic-normal mixture of Dirichlet topics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowjax_thesis.models.dap.corpus import Corpus, from_token_lists


@dataclass(frozen=True)
class SyntheticTruth:
    beta: np.ndarray  # (K, V) topic-word distributions
    alpha: np.ndarray  # (T, K, P) persona-topic trajectories
    kappa: np.ndarray  # (A, P) author persona distributions
    author_persona: np.ndarray  # (A,) dominant persona of each author
    doc_persona: np.ndarray  # (D,) persona drawn for each document
    theta: np.ndarray  # (D, K) document topic logits


def synthetic_corpus(
    *,
    num_topics: int = 5,
    num_personas: int = 3,
    num_authors: int = 30,
    num_times: int = 6,
    docs_per_author: int = 12,
    vocab_size: int = 200,
    doc_length: int = 60,
    eta: float = 0.05,
    alpha_scale: float = 2.0,
    process_noise: float = 0.1,
    doc_variance: float = 0.3,
    persona_purity: float = 0.95,
    seed: int = 0,
) -> tuple[Corpus, SyntheticTruth]:
    """Draws a corpus from DAP. Returns ``(corpus, truth)``.

    Topics are made distinguishable by giving each topic a block of "anchor" words with extra
    prior mass, so that planted topics can be recovered from a few thousand tokens.
    """
    if num_authors < num_personas:
        raise ValueError("need at least as many authors as personas")
    rng = np.random.default_rng(seed)
    k, p, v = num_topics, num_personas, vocab_size
    prior = np.full((k, v), eta)
    block = v // k
    for i in range(k):
        prior[i, i * block : (i + 1) * block] += 1.0
    beta = np.stack([rng.dirichlet(prior[i]) for i in range(k)])
    gaps = rng.choice([1.0, 1.0, 2.0, 3.0], size=num_times - 1)
    time_values = np.concatenate([[0.0], np.cumsum(gaps)])
    alpha = np.zeros((num_times, k, p))
    alpha[0] = alpha_scale * rng.normal(size=(k, p))
    for t in range(1, num_times):
        alpha[t] = alpha[t - 1] + np.sqrt(process_noise * gaps[t - 1]) * rng.normal(size=(k, p))
    author_persona = np.concatenate([np.arange(p), rng.integers(0, p, size=num_authors - p)])
    author_persona = rng.permutation(author_persona)
    kappa = np.full((num_authors, p), (1 - persona_purity) / max(p - 1, 1))
    kappa[np.arange(num_authors), author_persona] = persona_purity if p > 1 else 1.0
    docs, authors, times, personas, thetas = [], [], [], [], []
    for a in range(num_authors):
        for _ in range(docs_per_author):
            t = int(rng.integers(num_times))
            x = int(rng.choice(p, p=kappa[a]))
            theta = alpha[t, :, x] + np.sqrt(doc_variance) * rng.normal(size=k)
            probs = np.exp(theta - theta.max())
            probs /= probs.sum()
            n = max(10, int(rng.poisson(doc_length)))
            per_topic = rng.multinomial(n, probs)
            words = np.concatenate(
                [rng.choice(v, size=c, p=beta[i]) for i, c in enumerate(per_topic)]
            ).tolist()
            docs.append(words)
            authors.append(a)
            times.append(t)
            personas.append(x)
            thetas.append(theta)
    vocab = [f"w{i}" for i in range(v)]
    corpus = from_token_lists(
        docs,
        authors,
        times,
        vocab,
        author_names=[f"author{a}" for a in range(num_authors)],
        time_values=time_values,
    )
    truth = SyntheticTruth(
        beta=beta,
        alpha=alpha,
        kappa=kappa,
        author_persona=author_persona,
        doc_persona=np.asarray(personas),
        theta=np.asarray(thetas),
    )
    return corpus, truth
