"""Corpus layer for the DAP topic model: documents with an author, a time step and word counts.

A :class:`Corpus` stores bag-of-words documents in compressed sparse row (CSR) form: ``indptr``
(D+1,), ``word_ids`` and ``counts`` (nnz,), with ``authors`` (D,) and ``times`` (D,) as integer
indices into ``author_names`` and ``time_values``. It can be saved to a directory of ``.npy``
files and re-opened memory mapped (:func:`load_corpus`), so mini-batches stream from disk and
memory stays flat as the corpus grows: :meth:`Corpus.batch` only materializes the requested rows.

Building a corpus from raw text (:func:`build_corpus`) follows the thesis (section 3.8.1.2):
lowercase tokens, stopwords removed, the ``vocab_size`` most frequent words kept, documents with
fewer than ``min_words`` in-vocabulary words dropped, timestamps turned into relative discrete
time steps, and a per-author 90/10 train/test split (:func:`split_by_author`).

The original DAPPER text format (``.dap``) is read and written by :func:`read_dap` /
:func:`write_dap`: line 1 holds T; then for each time step a timestamp line, a line with N_t,
and N_t lines ``author num_terms w:c w:c ...``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

_TOKEN = re.compile(r"[a-z][a-z']*[a-z]|[a-z]")


def default_stopwords() -> frozenset[str]:
    """English stopwords (scikit-learn's list plus a few web/news artifacts)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    extra = {"said", "says", "just", "like", "s", "t", "don", "ll", "ve", "re", "m", "d", "http"}
    return frozenset(ENGLISH_STOP_WORDS) | frozenset(extra)


def tokenize(text: str, stopwords: Iterable[str] | None = None, min_len: int = 2) -> list[str]:
    """Lowercases ``text``, splits it into alphabetic tokens, drops stopwords and short tokens."""
    stop = default_stopwords() if stopwords is None else frozenset(stopwords)
    toks = _TOKEN.findall(text.lower())
    return [w.strip("'") for w in toks if len(w) >= min_len and w not in stop and w.strip("'")]


@dataclass(frozen=True)
class Corpus:
    """Bag-of-words documents in CSR form with author and time-step indices.

    Attributes:
      indptr: (D+1,) int64 row pointers into ``word_ids`` / ``counts``.
      word_ids: (nnz,) int32 vocabulary indices (unique within a document).
      counts: (nnz,) float32 word counts (> 0).
      authors: (D,) int32 indices into ``author_names``.
      times: (D,) int32 indices into ``time_values``.
      vocab: the V words.
      author_names: the A author names.
      time_values: (T,) float64 increasing time of each time step (relative units); gaps between
        consecutive entries drive the Brownian-motion variance.
    """

    indptr: np.ndarray
    word_ids: np.ndarray
    counts: np.ndarray
    authors: np.ndarray
    times: np.ndarray
    vocab: tuple[str, ...]
    author_names: tuple[str, ...]
    time_values: np.ndarray

    def __post_init__(self):
        d = len(self.authors)
        if self.indptr.shape != (d + 1,):
            raise ValueError(f"indptr must have shape ({d + 1},) for {d} documents")
        if self.times.shape != (d,):
            raise ValueError(f"times must have shape ({d},), got {self.times.shape}")
        if self.word_ids.shape != self.counts.shape:
            raise ValueError("word_ids and counts must have the same shape")
        if len(self.vocab) == 0:
            raise ValueError("empty vocabulary: no word survived tokenization and filtering")
        if len(self.time_values) and np.any(np.diff(np.asarray(self.time_values)) <= 0):
            raise ValueError("time_values must be strictly increasing")

    # --- sizes -------------------------------------------------------------------------------
    @property
    def num_docs(self) -> int:
        return len(self.authors)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def num_authors(self) -> int:
        return len(self.author_names)

    @property
    def num_times(self) -> int:
        return len(self.time_values)

    @property
    def doc_lengths(self) -> np.ndarray:
        """Number of tokens of each document."""
        csum = np.concatenate([[0.0], np.cumsum(np.asarray(self.counts, dtype=np.float64))])
        return csum[np.asarray(self.indptr)[1:]] - csum[np.asarray(self.indptr)[:-1]]

    @property
    def num_tokens(self) -> int:
        return int(np.asarray(self.counts, dtype=np.float64).sum())

    def docs_per_time(self) -> np.ndarray:
        return np.bincount(np.asarray(self.times), minlength=self.num_times)

    def max_unique_words(self) -> int:
        return int(np.diff(np.asarray(self.indptr)).max()) if self.num_docs else 0

    # --- access -------------------------------------------------------------------------------
    def doc(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.indptr[d]), int(self.indptr[d + 1])
        return np.asarray(self.word_ids[lo:hi]), np.asarray(self.counts[lo:hi])

    def subset(self, doc_ids: Sequence[int]) -> Corpus:
        """A new in-memory corpus with the given documents (same vocabulary, authors, times)."""
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        ids, cnts, lens = [], [], []
        for d in doc_ids:
            w, c = self.doc(int(d))
            ids.append(w)
            cnts.append(c)
            lens.append(len(w))
        indptr = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]).astype(np.int64)
        return Corpus(
            indptr=indptr,
            word_ids=np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32),
            counts=np.concatenate(cnts).astype(np.float32) if cnts else np.zeros(0, np.float32),
            authors=np.asarray(self.authors)[doc_ids].astype(np.int32),
            times=np.asarray(self.times)[doc_ids].astype(np.int32),
            vocab=self.vocab,
            author_names=self.author_names,
            time_values=np.asarray(self.time_values),
        )

    def batch(self, doc_ids: Sequence[int], pad_docs_to: int | None = None, min_len: int = 16):
        """Padded arrays for the documents ``doc_ids``.

        The unique-word axis is padded to a power of two (at least ``min_len``) so that only a few
        shapes are ever compiled; the document axis is padded to ``pad_docs_to`` with empty,
        masked documents. Returns a :class:`DocBatch`.
        """
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        n = len(doc_ids)
        b = n if pad_docs_to is None else int(pad_docs_to)
        if b < n:
            raise ValueError(f"pad_docs_to={b} is smaller than the number of documents {n}")
        indptr = np.asarray(self.indptr)
        lens = indptr[doc_ids + 1] - indptr[doc_ids] if n else np.zeros(0, np.int64)
        max_len = int(lens.max()) if n else 1
        width = max(min_len, 1 << int(np.ceil(np.log2(max(max_len, 1)))))
        ids = np.zeros((b, width), np.int32)
        cnts = np.zeros((b, width), np.float32)
        for i, d in enumerate(doc_ids):
            lo, hi = int(indptr[d]), int(indptr[d + 1])
            ids[i, : hi - lo] = self.word_ids[lo:hi]
            cnts[i, : hi - lo] = self.counts[lo:hi]
        authors = np.zeros(b, np.int32)
        times = np.zeros(b, np.int32)
        mask = np.zeros(b, np.float32)
        authors[:n] = np.asarray(self.authors)[doc_ids]
        times[:n] = np.asarray(self.times)[doc_ids]
        mask[:n] = 1.0
        return DocBatch(ids, cnts, authors, times, mask)

    # --- persistence --------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Writes the corpus to directory ``path`` (``.npy`` arrays + ``meta.json``)."""
        os.makedirs(path, exist_ok=True)
        for name in ("indptr", "word_ids", "counts", "authors", "times", "time_values"):
            np.save(os.path.join(path, name + ".npy"), np.asarray(getattr(self, name)))
        meta = {"vocab": list(self.vocab), "author_names": list(self.author_names)}
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump(meta, f)
        return path


class DocBatch(NamedTuple):
    """Padded documents (a NamedTuple, hence a JAX pytree).

    word_ids, counts: (B, L); authors, times, mask: (B,). Padding words have count 0, padding
    documents have mask 0.
    """

    word_ids: np.ndarray
    counts: np.ndarray
    authors: np.ndarray
    times: np.ndarray
    mask: np.ndarray


def load_corpus(path: str, mmap: bool = True) -> Corpus:
    """Opens a corpus written by :meth:`Corpus.save`; arrays are memory mapped when ``mmap``."""
    mode = "r" if mmap else None
    if not os.path.exists(os.path.join(path, "meta.json")):
        raise FileNotFoundError(f"{path!r} is not a saved corpus (no meta.json)")
    arrs = {
        name: np.load(os.path.join(path, name + ".npy"), mmap_mode=mode)
        for name in ("indptr", "word_ids", "counts", "authors", "times", "time_values")
    }
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    return Corpus(vocab=tuple(meta["vocab"]), author_names=tuple(meta["author_names"]), **arrs)


def from_token_lists(
    docs: Sequence[Sequence[int]] | Sequence[dict[int, float]],
    authors: Sequence[int],
    times: Sequence[int],
    vocab: Sequence[str],
    author_names: Sequence[str] | None = None,
    time_values: Sequence[float] | None = None,
) -> Corpus:
    """Builds a corpus from documents given as token-id lists or ``{word_id: count}`` dicts."""
    if len(docs) == 0:
        raise ValueError("empty corpus: no documents")
    if not (len(docs) == len(authors) == len(times)):
        raise ValueError(
            f"docs, authors and times must have equal lengths, got {len(docs)}, "
            f"{len(authors)}, {len(times)}"
        )
    ids, cnts, lens = [], [], []
    v = len(vocab)
    for doc in docs:
        c = Counter(doc) if not isinstance(doc, dict) else doc
        keys = np.array(sorted(c), dtype=np.int64)
        if len(keys) and (keys.min() < 0 or keys.max() >= v):
            raise ValueError(f"word ids must lie in [0, {v}), got {keys.min()}..{keys.max()}")
        ids.append(keys.astype(np.int32))
        cnts.append(np.array([c[k] for k in keys], np.float32))
        lens.append(len(keys))
    a = np.asarray(authors, np.int32)
    t = np.asarray(times, np.int32)
    n_a = int(a.max()) + 1 if author_names is None else len(author_names)
    n_t = int(t.max()) + 1 if time_values is None else len(time_values)
    if a.min() < 0 or a.max() >= n_a:
        raise ValueError("author indices out of range")
    if t.min() < 0 or t.max() >= n_t:
        raise ValueError("time indices out of range")
    return Corpus(
        indptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        word_ids=np.concatenate(ids).astype(np.int32),
        counts=np.concatenate(cnts).astype(np.float32),
        authors=a,
        times=t,
        vocab=tuple(vocab),
        author_names=tuple(author_names or [str(i) for i in range(n_a)]),
        time_values=np.asarray(time_values if time_values is not None else np.arange(n_t), float),
    )


# --- raw text ---------------------------------------------------------------------------------
def _to_days(x) -> float:
    """Days since the epoch for a date/datetime/ISO string/number (numbers are taken as days)."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        raise ValueError("missing date")
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    if isinstance(x, np.datetime64):
        return float(x.astype("datetime64[s]").astype(np.int64)) / 86400.0
    if isinstance(x, str):
        s = x.strip()
        if not s:
            raise ValueError("missing date")
        x = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    if isinstance(x, _dt.datetime):
        if x.tzinfo is not None:
            x = x.astimezone(_dt.UTC).replace(tzinfo=None)
        return (x - _dt.datetime(1970, 1, 1)).total_seconds() / 86400.0
    if isinstance(x, _dt.date):
        return float((x - _dt.date(1970, 1, 1)).days)
    if hasattr(x, "to_pydatetime"):
        return _to_days(x.to_pydatetime())
    raise ValueError(f"cannot interpret {x!r} as a date")


def build_corpus(
    authors: Sequence,
    dates: Sequence,
    texts: Sequence[str],
    *,
    vocab_size: int = 10_000,
    min_words: int = 10,
    time_unit_days: float = 1.0,
    relative_to: str = "corpus",
    stopwords: Iterable[str] | None = None,
    drop_missing: bool = False,
) -> Corpus:
    """Builds a :class:`Corpus` from a table of (author, date, text).

    Args:
      authors, dates, texts: equally long columns. Dates may be ISO strings, ``datetime``/``date``
        objects, numpy datetimes, or numbers (taken as days).
      vocab_size: keep the ``vocab_size`` most frequent words (after stopword removal).
      min_words: drop documents with fewer in-vocabulary tokens than this.
      time_unit_days: length of one discrete time step (1 = days, 7 = weeks).
      relative_to: ``"corpus"`` (time step = position within the corpus span, as the thesis does
        for Signal Media) or ``"author"`` (time since the author's first document, as for
        CaringBridge).
      drop_missing: drop rows without author, date or text instead of raising.

    The time grid holds only the time steps that occur, so gaps between steps may be irregular.
    When ``min_words`` drops documents, a ``UserWarning`` says how many (of how many).
    """
    for option, value, minimum in (("vocab_size", vocab_size, 1), ("min_words", min_words, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"build_corpus: {option} must be an int >= {minimum}, got {value!r}")
    if not isinstance(time_unit_days, (int, float)) or not (
        np.isfinite(time_unit_days) and time_unit_days > 0
    ):
        raise ValueError(
            f"build_corpus: time_unit_days must be a finite number > 0, got {time_unit_days!r}"
        )
    n = len(texts)
    if not (len(authors) == len(dates) == n):
        raise ValueError(
            f"authors, dates and texts must have equal lengths, got {len(authors)}, "
            f"{len(dates)}, {n}"
        )
    if n == 0:
        raise ValueError("empty corpus: no documents given")
    if relative_to not in ("corpus", "author"):
        raise ValueError(f"relative_to must be 'corpus' or 'author', got {relative_to!r}")
    stop = default_stopwords() if stopwords is None else frozenset(stopwords)
    rows, bad = [], []
    for i, (a, d, txt) in enumerate(zip(authors, dates, texts, strict=True)):
        missing_author = a is None or (isinstance(a, float) and np.isnan(a)) or str(a) == ""
        try:
            day = None if missing_author else _to_days(d)
        except ValueError:
            day = None
        if missing_author or day is None or not isinstance(txt, str):
            bad.append(i)
            continue
        rows.append((str(a), day, tokenize(txt, stop)))
    if bad and not drop_missing:
        raise ValueError(
            f"{len(bad)} document(s) lack an author, a readable date or a text (first rows: "
            f"{bad[:5]}); pass drop_missing=True to drop them"
        )
    freq = Counter(w for _, _, toks in rows for w in toks)
    if not freq:
        raise ValueError("empty vocabulary: no token survived tokenization and stopword removal")
    vocab = [w for w, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]]
    index = {w: i for i, w in enumerate(vocab)}
    kept = []
    for a, day, toks in rows:
        ids = [index[w] for w in toks if w in index]
        if len(ids) >= min_words:
            kept.append((a, day, ids))
    if not kept:
        raise ValueError(f"empty corpus: no document has at least min_words={min_words} words")
    if len(kept) < len(rows):
        warnings.warn(
            f"build_corpus: min_words={min_words} dropped {len(rows) - len(kept)} of "
            f"{len(rows)} documents",
            stacklevel=2,
        )
    names = sorted({a for a, _, _ in kept})
    aid = {a: i for i, a in enumerate(names)}
    if relative_to == "corpus":
        origin = {a: min(day for _, day, _ in kept) for a in names}
    else:
        origin = {}
        for a, day, _ in kept:
            origin[a] = min(origin.get(a, np.inf), day)
    steps = [int(np.floor((day - origin[a]) / time_unit_days)) for a, day, _ in kept]
    grid = np.array(sorted(set(steps)), dtype=np.float64)
    tindex = {int(s): i for i, s in enumerate(grid)}
    return from_token_lists(
        [ids for _, _, ids in kept],
        [aid[a] for a, _, _ in kept],
        [tindex[s] for s in steps],
        vocab,
        author_names=names,
        time_values=grid,
    )


def split_by_author(
    corpus: Corpus, test_fraction: float = 0.1, seed: int = 0
) -> tuple[Corpus, Corpus]:
    """Per-author train/test split: ``test_fraction`` of each author's documents go to test.

    Each author keeps at least one training document (authors with a single document appear in
    training only), so every test author has a learned persona distribution.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    authors = np.asarray(corpus.authors)
    train, test = [], []
    for a in np.unique(authors):
        docs = np.flatnonzero(authors == a)
        docs = rng.permutation(docs)
        n_test = min(int(round(test_fraction * len(docs))), len(docs) - 1)
        test.extend(docs[:n_test].tolist())
        train.extend(docs[n_test:].tolist())
    return corpus.subset(sorted(train)), corpus.subset(sorted(test))


def split_tokens(corpus: Corpus, seed: int = 0) -> tuple[Corpus, Corpus]:
    """Document completion split: each document's tokens are halved at random.

    Returns ``(observed, heldout)`` corpora with the same documents in the same order; a word's
    count is split between the halves. Both halves keep every document (a half may be empty).
    """
    rng = np.random.default_rng(seed)
    obs_ids, obs_c, held_ids, held_c, lo_obs, lo_held = [], [], [], [], [0], [0]
    for d in range(corpus.num_docs):
        w, c = corpus.doc(d)
        tokens = np.repeat(w, c.astype(np.int64))
        tokens = rng.permutation(tokens)
        half = len(tokens) // 2
        for part, ids_l, c_l, lo in (
            (tokens[:half], obs_ids, obs_c, lo_obs),
            (tokens[half:], held_ids, held_c, lo_held),
        ):
            u, k = np.unique(part, return_counts=True)
            ids_l.append(u.astype(np.int32))
            c_l.append(k.astype(np.float32))
            lo.append(lo[-1] + len(u))
    out = []
    for ids_l, c_l, lo in ((obs_ids, obs_c, lo_obs), (held_ids, held_c, lo_held)):
        out.append(
            Corpus(
                indptr=np.asarray(lo, np.int64),
                word_ids=np.concatenate(ids_l) if ids_l else np.zeros(0, np.int32),
                counts=np.concatenate(c_l) if c_l else np.zeros(0, np.float32),
                authors=np.asarray(corpus.authors, np.int32),
                times=np.asarray(corpus.times, np.int32),
                vocab=corpus.vocab,
                author_names=corpus.author_names,
                time_values=np.asarray(corpus.time_values),
            )
        )
    return out[0], out[1]


def repeat_corpus(corpus: Corpus, times: int) -> Corpus:
    """The corpus concatenated ``times`` times (for memory-scaling checks)."""
    return corpus.subset(np.tile(np.arange(corpus.num_docs), times))


# --- the original DAPPER text format (read_dap / write_dap live in dapfile.py) -------------------
from flowjax_thesis.models.dap.dapfile import DAP_MAX_VOCAB, read_dap, write_dap  # noqa: E402

__all__ = [
    "Corpus",
    "DocBatch",
    "DAP_MAX_VOCAB",
    "build_corpus",
    "default_stopwords",
    "from_token_lists",
    "load_corpus",
    "read_dap",
    "repeat_corpus",
    "split_by_author",
    "split_tokens",
    "tokenize",
    "write_dap",
]
