"""Tests see a fresh machine's data: an empty data cache (``$FLOWJAX_THESIS_DATA``), so data sets
that `flowjax-thesis data get` fetched on this machine do not change what the tests (and the
CLI runs they start) load. Tests marked ``slow`` keep the real cache (one reads the real files).
"""

import pytest

from flowjax_thesis.data.fetch import CACHE_ENV


@pytest.fixture(autouse=True)
def empty_data_cache(request, tmp_path_factory, monkeypatch):
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("empty-data-cache")))
    yield
