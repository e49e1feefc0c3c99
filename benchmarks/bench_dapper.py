"""DAPPER speed and memory: tokens per second of one pass against LDA, and flat memory when the
corpus grows.

``dapper_speed``: one full-batch DAPPER pass (E-step over every training document + M-step,
compile excluded) on NewsArticles (V=10,000, 90/10 per-author split) against one pass of
gensim's LdaModel and of scikit-learn's online LatentDirichletAllocation, same K.
``dapper_memory``: the corpus saved to disk once and repeated 4 times; a fresh process streams one
epoch of mini-batches from the memory-mapped arrays while a thread samples its anonymous resident
memory (``RssAnon``: the heap, not the page cache of the mapped files). Flat means the 4x peak is
close to the 1x peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import jax


def _news(max_docs: int):
    from flowjax_thesis.models.dap.corpus import split_by_author
    from flowjax_thesis.models.dap.news import news_articles_corpus

    corpus = news_articles_corpus(vocab_size=10_000, max_docs=max_docs or None)
    return split_by_author(corpus, 0.1, seed=0)


def dapper_speed(num_topics: int = 25, num_personas: int = 15, max_docs: int = 0) -> dict:
    from sklearn.decomposition import LatentDirichletAllocation

    from flowjax_thesis.models.dap import DapConfig, fit_dapper
    from flowjax_thesis.models.dap import lda_baselines as lb

    train, _ = _news(max_docs)
    tokens = float(train.num_tokens)
    cfg = DapConfig(num_topics=num_topics, num_personas=num_personas, doc_variance=1.0)
    key = jax.random.PRNGKey(0)
    warm = fit_dapper(train, cfg, key=key, epochs=1)  # compiles
    t0 = time.perf_counter()  # one full-batch epoch through the engine, its overhead included
    fit_dapper(train, cfg, key=key, epochs=1, state=warm.state)
    dapper = tokens / (time.perf_counter() - t0)
    x = lb.to_csr(train)
    lda = LatentDirichletAllocation(
        num_topics, learning_method="online", max_iter=1, batch_size=128, random_state=0
    )
    t0 = time.perf_counter()
    lda.fit(x)
    sk = tokens / (time.perf_counter() - t0)
    out = {
        "tokens": tokens,
        "num_topics": num_topics,
        "dapper_full_batch": dapper,
        "sklearn_online": sk,
    }
    try:
        _, seconds = lb.gensim_lda(train, num_topics, passes=1)
        out["gensim"] = tokens / seconds
    except ImportError as err:
        out["gensim"] = None
        out["gensim_error"] = str(err)
    out["dapper_over_sklearn_online"] = dapper / sk
    if out["gensim"]:
        out["dapper_over_gensim"] = dapper / out["gensim"]
    out["goal"] = "DAPPER ahead of both (ratios > 1); token-passes per second, compile excluded"
    return out


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def stream_epoch(path: str, num_topics: int, num_personas: int, batch_size: int) -> dict:
    """One mini-batch epoch over the saved corpus at ``path``; peak RssAnon while it runs."""
    from flowjax_thesis.models.dap import DapConfig, fit_dapper
    from flowjax_thesis.models.dap.corpus import load_corpus

    corpus = load_corpus(path, mmap=True)
    cfg = DapConfig(num_topics=num_topics, num_personas=num_personas, doc_variance=1.0)
    peak, running = [_rss_anon_kb()], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _rss_anon_kb())
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    fit_dapper(corpus, cfg, key=jax.random.PRNGKey(0), epochs=1, batch_size=batch_size)
    running[0] = False
    thread.join()
    return {
        "docs": corpus.num_docs,
        "tokens": float(corpus.num_tokens),
        "peak_rss_anon_mb": peak[0] / 1024,
        "seconds": time.perf_counter() - t0,
    }


def dapper_memory(
    times: int = 4,
    batch_size: int = 256,
    num_topics: int = 25,
    num_personas: int = 15,
    max_docs: int = 0,
) -> dict:
    from flowjax_thesis.models.dap.corpus import repeat_corpus

    train, _ = _news(max_docs)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, times):
            path = repeat_corpus(train, n).save(os.path.join(tmp, f"x{n}"))
            code = (
                "import json, sys; from benchmarks.bench_dapper import stream_epoch; "
                "print(json.dumps(stream_epoch(*sys.argv[1:2], *map(int, sys.argv[2:]))))"
            )
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    code,
                    path,
                    str(num_topics),
                    str(num_personas),
                    str(batch_size),
                ],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
            out[f"x{n}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_ratio"] = out[f"x{times}"]["peak_rss_anon_mb"] / out["x1"]["peak_rss_anon_mb"]
    out["goal"] = f"peak anonymous memory flat when the corpus is repeated {times}x (ratio ~ 1)"
    return out
