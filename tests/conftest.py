"""Test-wide setup.

- Tests see a fresh machine's data: an empty data cache (``$FLOWJAX_THESIS_DATA``), so data sets
  that `flowjax-thesis data get` fetched on this machine do not change what the tests (and the
  CLI runs they start) load. Tests marked ``slow`` keep the real cache (one reads the real files).
- XLA flags, set before JAX starts its backend (``pytest_configure`` runs before any test module
  is imported). Single-threaded Eigen always: the pytest-xdist workers (one per core) do not
  oversubscribe the cores. The default run (unit and property tests) compiles hundreds of small
  programs and runs each briefly, so it also asks for XLA's cheapest backend optimisation
  (measured: these flags alone took the whole default run from 20.6 to 13.2 minutes); the
  ``e2e``, ``integration`` and ``slow`` runs train models for longer and keep XLA's optimisation.
  Subprocesses inherit the flags, except the multi-device runs, which set their own.
"""

import os

import pytest

from flowjax_thesis.data.fetch import CACHE_ENV

ALWAYS_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"
FAST_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)


def _is_default_run(markexpr: str) -> bool:
    """The default selection (pyproject's addopts) leaves out every marked group."""
    return all(f"not {mark}" in markexpr for mark in ("e2e", "integration", "slow"))


def pytest_configure(config):
    flags = [os.environ.get("XLA_FLAGS", ""), ALWAYS_XLA_FLAGS]
    if _is_default_run(config.getoption("markexpr") or ""):
        flags.append(FAST_COMPILE_XLA_FLAGS)
    os.environ["XLA_FLAGS"] = " ".join(f for f in flags if f)


@pytest.fixture(autouse=True)
def empty_data_cache(request, tmp_path_factory, monkeypatch):
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("empty-data-cache")))
    yield
