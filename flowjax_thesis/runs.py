"""Run directories: ``config.json``, ``metrics.jsonl``, ``summary.json``, ``figures/``,
``checkpoints/``, ``log.txt``.

A :class:`Run` is handed to every experiment. It owns the output folder and the log, so that
experiments never deal with paths or file formats themselves. While a run uses its directory it
holds a lock on it (a second run into the same directory is refused). Every training inside a run
is named by its tags: its checkpoints live in ``checkpoints/<tags>`` and its records in
``metrics.jsonl`` carry the tags, so a resumed run continues each training where it stopped and
keeps one record per (tags, step).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class RunDirectoryError(RuntimeError):
    """A run directory cannot be used (locked by another run, or holding another experiment)."""


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


def in_use(path: str) -> bool:
    """Whether a run holds the lock of the run directory ``path``."""
    lock = os.path.join(path, ".lock")
    if not os.path.exists(lock):
        return False
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def tags_slug(tags: dict) -> str:
    """A directory name for a training's tags, e.g. ``model=iaf,seed=0``."""
    if not tags:
        return "main"
    text = ",".join(f"{k}={v}" for k, v in tags.items())
    return re.sub(r"[^A-Za-z0-9=,._+-]", "-", text)


def record_key(record: dict) -> str:
    """What identifies a metrics record: its step, its tags and any other non-numeric field
    (older callers pass labels such as ``model="iaf"`` as plain fields)."""
    labels = {
        k: v for k, v in record.items() if k != "tags" and (isinstance(v, (str, bool)) or v is None)
    }
    return json.dumps(
        {"step": record.get("step"), "tags": record.get("tags", {}), **labels}, sort_keys=True
    )


@dataclass
class Run:
    """An experiment's output directory.

    Attributes:
      dir: the run directory (created on construction and locked until :meth:`close`).
      quiet: if True, :meth:`print` writes nothing to stdout (the log file still gets it).
      profile: the settings profile (``"smoke"``, ``"cpu"``, ``"full"``; empty outside the CLI).
      allow_stand_in: whether offline stand-ins may replace missing real data at ``full``.
      dry_run: plan instead of training: the first ``fit`` compiles and times its step and
        stops the experiment (:mod:`flowjax_thesis.train.plan`).
    """

    dir: str
    quiet: bool = False
    profile: str = ""
    allow_stand_in: bool = False
    dry_run: bool = False
    _log: Any = field(default=None, repr=False)
    _lock: Any = field(default=None, repr=False)
    _claimed: set = field(default_factory=set, repr=False)

    def __post_init__(self):
        os.makedirs(self.dir, exist_ok=True)
        self._lock = open(os.path.join(self.dir, ".lock"), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "another process"
            self._lock.close()
            self._lock = None
            raise RunDirectoryError(
                f"run directory {self.dir} is in use by another run ({owner}); wait for it to "
                "finish or choose another --out"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()}")
        self._lock.flush()
        os.makedirs(self.figures_dir, exist_ok=True)
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        self._log = open(os.path.join(self.dir, "log.txt"), "a")
        self.compact_metrics()

    @property
    def strict_data(self) -> bool:
        """Missing real data is an error (no stand-ins): the ``full`` profile, unless
        ``allow_stand_in`` (:func:`flowjax_thesis.data.availability.data_policy`)."""
        return self.profile == "full" and not self.allow_stand_in

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

    def claim_checkpoint_dir(self, tags: dict) -> str:
        """The checkpoint directory of the training named ``tags``; each name once per run."""
        slug = tags_slug(tags)
        if slug in self._claimed:
            raise ValueError(
                f"two trainings in one run have the same tags {tags or '{}'}: give each call of "
                "fit its own tags (e.g. model, seed, component, phase) so that their checkpoints "
                "and metrics stay apart"
            )
        self._claimed.add(slug)
        return os.path.join(self.checkpoint_dir, slug)

    def print(self, *msg: Any) -> None:
        text = " ".join(str(m) for m in msg)
        self._log.write(text + "\n")
        self._log.flush()
        if not self.quiet:
            print(text, file=sys.stdout, flush=True)

    def log_metrics(self, step: int, tags: dict | None = None, **metrics: Any) -> None:
        """Appends one record ``{"step": step, "tags": tags, **metrics}`` to ``metrics.jsonl``."""
        record = {"step": int(step), **({"tags": tags} if tags is not None else {}), **metrics}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(to_jsonable(record)) + "\n")

    def read_metrics(self) -> list[dict]:
        if not os.path.exists(self.metrics_path):
            return []
        out = []
        with open(self.metrics_path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
        return out

    def _rewrite_metrics(self, records: list[dict]) -> None:
        tmp = self.metrics_path + ".tmp"
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(to_jsonable(r)) + "\n")
        os.replace(tmp, self.metrics_path)

    def drop_metrics(self, tags: dict, after_step: int) -> None:
        """Removes the records of the training ``tags`` after ``after_step`` (a resumed training
        logs them again from its checkpoint)."""
        records = self.read_metrics()
        want = to_jsonable(tags)
        keep = [
            r for r in records if not (r.get("tags", {}) == want and r.get("step", 0) > after_step)
        ]
        if len(keep) != len(records):
            self._rewrite_metrics(keep)

    def compact_metrics(self) -> None:
        """Keeps the last record of each (tags, step, labels): a resumed run that logs a record
        again replaces it instead of duplicating it."""
        records = self.read_metrics()
        latest = {record_key(r): i for i, r in enumerate(records)}
        torn = os.path.exists(self.metrics_path) and not _ends_clean(self.metrics_path)
        if len(latest) != len(records) or torn:
            self._rewrite_metrics([r for i, r in enumerate(records) if latest[record_key(r)] == i])

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
            self.compact_metrics()
            self._log.close()
            self._log = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_clean(path: str) -> bool:
    if os.path.getsize(path) == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
