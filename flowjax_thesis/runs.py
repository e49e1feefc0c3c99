"""Run directories: ``config.json``, ``metrics.jsonl``, ``summary.json``, ``figures/``,
``checkpoints/``.

A :class:`Run` is handed to every experiment. It owns the output folder and the log, so that
experiments never deal with paths or file formats themselves.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Converts numpy/JAX scalars and arrays (and nested containers of them) to JSON types."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return to_jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(to_jsonable(obj), f, indent=2, sort_keys=True)
    os.replace(tmp, path)


@dataclass
class Run:
    """An experiment's output directory.

    Attributes:
      dir: the run directory (created on construction).
      quiet: if True, :meth:`print` writes nothing to stdout (the log file still gets it).
    """

    dir: str
    quiet: bool = False
    _log: Any = field(default=None, repr=False)

    def __post_init__(self):
        os.makedirs(self.figures_dir, exist_ok=True)
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        self._log = open(os.path.join(self.dir, "log.txt"), "a")

    @property
    def figures_dir(self) -> str:
        return os.path.join(self.dir, "figures")

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.dir, "checkpoints")

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.dir, "metrics.jsonl")

    def figure_path(self, name: str) -> str:
        """Path of ``figures/<name>`` (``.png`` appended when no extension is given)."""
        if not os.path.splitext(name)[1]:
            name += ".png"
        return os.path.join(self.figures_dir, name)

    def subdir(self, name: str) -> str:
        path = os.path.join(self.dir, name)
        os.makedirs(path, exist_ok=True)
        return path

    def print(self, *msg: Any) -> None:
        text = " ".join(str(m) for m in msg)
        self._log.write(text + "\n")
        self._log.flush()
        if not self.quiet:
            print(text, file=sys.stdout, flush=True)

    def log_metrics(self, step: int, **metrics: Any) -> None:
        """Appends one line ``{"step": step, **metrics}`` to ``metrics.jsonl``."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(to_jsonable({"step": int(step), **metrics})) + "\n")

    def write_config(self, config: dict) -> None:
        write_json(os.path.join(self.dir, "config.json"), config)

    def write_summary(self, summary: dict) -> None:
        write_json(os.path.join(self.dir, "summary.json"), summary)

    def save_figure(self, fig, name: str) -> str:
        path = self.figure_path(name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        return path

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
