"""The experiment registry.

An experiment is a function ``run(cfg: dict, run: Run) -> dict`` (the returned dict is written to
``summary.json``) registered with its settings for each profile::

    @register(
        "vi-planar-ring",
        description="Planar and RealNVP flows on the blog's ring energy (ELBO).",
        smoke=dict(steps=200, ...), cpu=dict(steps=5000, ...), full=dict(steps=20000, ...),
        paper={"source": "blog part 5", ...},   # optional: the published numbers for the report
    )
    def vi_planar_ring(cfg, run): ...

Every profile must define the same keys. ``--set key=value`` may only change existing keys; the
value is parsed as JSON (falling back to a plain string) and must keep the default's type.
Experiments live in modules listed in ``_MODULES`` so that importing this package registers them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("smoke", "cpu", "full")


@dataclass(frozen=True)
class Experiment:
    name: str
    fn: Callable[[dict, Any], dict]
    profiles: dict[str, dict]
    description: str = ""
    paper: dict = field(default_factory=dict)

    def config(self, profile: str = "smoke", overrides: dict[str, str] | None = None) -> dict:
        """The settings of ``profile`` with ``overrides`` (strings, as on the command line)."""
        if profile not in self.profiles:
            raise ValueError(
                f"unknown profile {profile!r} for experiment {self.name!r}; "
                f"expected one of {sorted(self.profiles)}"
            )
        cfg = dict(self.profiles[profile])
        for key, text in (overrides or {}).items():
            if key not in cfg:
                raise KeyError(
                    f"unknown setting {key!r} for experiment {self.name!r}; "
                    f"valid settings: {', '.join(sorted(cfg))}"
                )
            cfg[key] = parse_value(key, text, cfg[key])
        return cfg


def parse_value(key: str, text: Any, default: Any) -> Any:
    """Parses a ``--set`` value so that it has the type of ``default``."""
    if not isinstance(text, str):
        value = text
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"setting {key!r} expects true or false, got {text!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (int, float, str)):
        value = [value]
    if default is not None and not isinstance(value, type(default)):
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            return type(default)(value)
        raise ValueError(
            f"setting {key!r} expects a {type(default).__name__} like {default!r}, got {text!r}"
        )
    return value


_REGISTRY: dict[str, Experiment] = {}

# Modules that register experiments on import (each team adds its own module here).
_MODULES = (
    "flowjax_thesis.experiments.gbnf",
    "flowjax_thesis.experiments.flows_2d",
    "flowjax_thesis.experiments.dapper",
    "flowjax_thesis.experiments.dapper_sotu",
    "flowjax_thesis.experiments.bayes_vi",
    "flowjax_thesis.experiments.psr_vectors",
    "flowjax_thesis.experiments.psr_images",
    "flowjax_thesis.experiments.vae",
    "flowjax_thesis.experiments.compressive",
)


def register(name: str, *, description: str = "", paper: dict | None = None, **profiles: dict):
    """Decorator that registers an experiment function under ``name``."""
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise ValueError(f"experiment {name!r} lacks profiles {missing}")
    keys = set(profiles["smoke"])
    for p, cfg in profiles.items():
        if set(cfg) != keys:
            raise ValueError(f"experiment {name!r}: profile {p!r} keys differ from 'smoke'")

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} registered twice")
        _REGISTRY[name] = Experiment(name, fn, profiles, description, paper or {})
        return fn

    return wrap


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown experiment {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
