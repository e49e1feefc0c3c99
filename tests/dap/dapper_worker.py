"""Trains DAPPER without and with a 4-device mesh; run as a subprocess by test_dapper.py.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/dap/dapper_worker.py OUT.npz

One full-batch epoch (three chunks of documents) then one mini-batch epoch (both E-step paths:
whole corpus and document ids), first on one device (no mesh), then with every chunk of
documents sharded over the 4 devices. Saves both final states and the per-step ELBOs.
"""

import sys

import jax
import numpy as np

from flowjax_thesis.models.dap import DapConfig, fit_dapper
from flowjax_thesis.models.dap.synthetic import synthetic_corpus
from flowjax_thesis.train import data_mesh


def train(corpus, cfg, mesh):
    full = fit_dapper(corpus, cfg, key=jax.random.PRNGKey(0), epochs=1, chunk=32, mesh=mesh)
    mini = fit_dapper(
        corpus,
        cfg,
        key=jax.random.PRNGKey(0),
        epochs=1,
        batch_size=24,
        chunk=32,
        state=full.state,
        mesh=mesh,
    )
    elbos = [r["train_elbo_docs_per_word"] for r in full.history + mini.history]
    s = mini.state
    return {"lam": s.lam, "delta": s.delta, "alpha": s.alpha, "elbo": np.asarray(elbos)}


def main(out: str) -> None:
    assert len(jax.devices()) == 4, jax.devices()
    corpus, _ = synthetic_corpus(num_authors=12, docs_per_author=6, vocab_size=60, seed=1)
    cfg = DapConfig(num_topics=3, num_personas=2, local_max_iter=15)
    one = train(corpus, cfg, None)
    four = train(corpus, cfg, data_mesh())
    np.savez(
        out,
        **{f"one_{k}": np.asarray(v) for k, v in one.items()},
        **{f"four_{k}": np.asarray(v) for k, v in four.items()},
    )


if __name__ == "__main__":
    main(sys.argv[1])
