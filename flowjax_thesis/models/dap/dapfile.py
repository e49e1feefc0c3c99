"""The original DAPPER text format (``.dap``): a strict reader and a writer.

Line 1 holds T; then for each time step a timestamp line, a line with N_t, and N_t lines
``author num_terms w:c w:c ...``. :func:`read_dap` rejects anything else with the file, the line
and the field in the message: counts must be finite and > 0 (and integers unless
``allow_fractions``), timestamps finite and strictly increasing, word ids below the vocabulary's
size (or ``max_vocab`` without a vocabulary, so that a stray id cannot allocate a huge one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # corpus.py re-exports this module's functions
    from flowjax_thesis.models.dap.corpus import Corpus

DAP_MAX_VOCAB = 1_000_000


class _DapLines:
    """The non-blank lines of a ``.dap`` file with their line numbers, read one at a time."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, encoding="utf-8") as f:
                self.lines = [(i, ln.strip()) for i, ln in enumerate(f, 1) if ln.strip()]
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such .dap file") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a text .dap file ({err.reason})") from None
        self.pos = 0
        self.lineno = 0

    def error(self, field: str, expected: str, got) -> ValueError:
        return ValueError(
            f"{self.path}, line {self.lineno}: {field} must be {expected}, got {got!r}"
        )

    def take(self, what: str) -> str:
        if self.pos >= len(self.lines):
            last = self.lines[-1][0] if self.lines else 0
            raise ValueError(
                f"{self.path}, line {last + 1}: unexpected end of file while reading {what}"
            )
        self.lineno, text = self.lines[self.pos]
        self.pos += 1
        return text

    def int_field(self, text: str, field: str, minimum: int) -> int:
        try:
            value = int(text)
        except ValueError:
            raise self.error(field, f"an int >= {minimum}", text) from None
        if value < minimum:
            raise self.error(field, f"an int >= {minimum}", text)
        return value

    def float_field(self, text: str, field: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise self.error(field, "a finite number", text) from None
        if not np.isfinite(value):
            raise self.error(field, "a finite number", text)
        return value


def read_dap(
    path: str,
    vocab: Sequence[str] | str | os.PathLike | None = None,
    *,
    allow_fractions: bool = False,
    max_vocab: int = DAP_MAX_VOCAB,
) -> Corpus:
    """Reads the original DAPPER ``.dap`` format, strictly.

    Line 1: T. Then, for each time step: a timestamp line, a line N_t, and N_t document lines
    ``author num_terms w:c w:c ...`` (author is a name or id; w a vocabulary index).

    Args:
      vocab: the vocabulary (one word per index), as a sequence of words or the path of a
        vocabulary file with one word per line; word ids must lie in ``[0, len(vocab))``.
        Without it the words are the indices as strings, and ids must be below ``max_vocab``
        (a stray id of 10^9 would otherwise allocate a billion-word vocabulary).
      allow_fractions: accept non-integer counts (e.g. tf-idf weights); counts are always
        finite and > 0.

    Every parse error names the file, the line and the field: T >= 1, finite and strictly
    increasing timestamps, N_t >= 0, num_terms matching the listed pairs, ``w:c`` pairs.
    """
    if isinstance(vocab, (str, os.PathLike)):
        vocab_path = os.fspath(vocab)
        with open(vocab_path, encoding="utf-8") as f:
            vocab = [ln.strip() for ln in f if ln.strip()]
        if not vocab:
            raise ValueError(f"vocabulary file {vocab_path!r} is empty")
    if not isinstance(max_vocab, int) or isinstance(max_vocab, bool) or max_vocab < 1:
        raise ValueError(f"max_vocab must be an int >= 1, got {max_vocab!r}")
    limit, limit_text = (
        (len(vocab), f"the vocabulary size {len(vocab)}")
        if vocab is not None
        else (max_vocab, f"max_vocab={max_vocab} (pass vocab= or a larger max_vocab)")
    )
    src = _DapLines(path)
    if not src.lines:
        raise ValueError(f"{path}: empty .dap file")
    num_times = src.int_field(src.take("T"), "T (the number of time steps, line 1)", 1)
    docs, authors, times, stamps, names = [], [], [], [], {}
    max_word = -1
    for t in range(num_times):
        stamp = src.float_field(src.take(f"the timestamp of time step {t}"), "timestamp")
        if stamps and stamp <= stamps[-1]:
            raise src.error("timestamp", f"greater than the previous one ({stamps[-1]!r})", stamp)
        stamps.append(stamp)
        n_t = src.int_field(src.take(f"N_t of time step {t}"), f"N_t of time step {t}", 0)
        for _ in range(n_t):
            parts = src.take(f"a document line of time step {t}").split()
            if len(parts) < 2:
                raise src.error("a document line", "'author num_terms w:c ...'", " ".join(parts))
            author = parts[0]
            nterms = src.int_field(parts[1], "num_terms", 0)
            pairs = parts[2:]
            if len(pairs) != nterms:
                raise ValueError(
                    f"{path}, line {src.lineno}: num_terms says {nterms} terms but the line "
                    f"lists {len(pairs)} w:c pairs"
                )
            doc: dict[int, float] = {}
            for p in pairs:
                w_text, sep, c_text = p.partition(":")
                if not sep:
                    raise src.error("a term", "'word_id:count'", p)
                w = src.int_field(w_text, "word id", 0)
                if w >= limit:
                    raise src.error("word id", f"below {limit_text}", w)
                c = src.float_field(c_text, f"the count of word {w}")
                if c <= 0:
                    raise src.error(f"the count of word {w}", "> 0", c_text)
                if not allow_fractions and c != int(c):
                    raise src.error(
                        f"the count of word {w}",
                        "an integer (allow_fractions=True for weights)",
                        c_text,
                    )
                doc[w] = doc.get(w, 0.0) + c
                max_word = max(max_word, w)
            docs.append(doc)
            authors.append(names.setdefault(author, len(names)))
            times.append(t)
    if src.pos != len(src.lines):
        extra = len(src.lines) - src.pos
        raise ValueError(
            f"{path}, line {src.lines[src.pos][0]}: {extra} trailing line(s) after the last "
            f"of the T={num_times} time steps"
        )
    if not docs:
        raise ValueError(f"{path}: empty corpus (no document lines)")
    if vocab is None:
        vocab = [str(i) for i in range(max_word + 1)]
    from flowjax_thesis.models.dap.corpus import from_token_lists

    return from_token_lists(
        docs,
        authors,
        times,
        vocab,
        author_names=list(names),
        time_values=stamps,
    )


def write_dap(corpus: Corpus, path: str) -> str:
    """Writes ``corpus`` in the ``.dap`` format (documents grouped by time step)."""
    times = np.asarray(corpus.times)
    with open(path, "w") as f:
        f.write(f"{corpus.num_times}\n")
        for t in range(corpus.num_times):
            docs = np.flatnonzero(times == t)
            f.write(f"{float(corpus.time_values[t])!r}\n{len(docs)}\n")
            for d in docs:
                w, c = corpus.doc(int(d))
                pairs = " ".join(f"{int(i)}:{int(k) if k == int(k) else k}" for i, k in zip(w, c))
                f.write(f"{corpus.author_names[int(corpus.authors[d])]} {len(w)} {pairs}\n")
    return path
