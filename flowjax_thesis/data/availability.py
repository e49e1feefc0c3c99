"""Which data a run used, and what a loader does when a real data set is missing.

Every loader of this package reports what it returns with :func:`note_used` (name, ``source``
sentence, whether it is an offline stand-in), and, when the requested data set is not found,
calls :func:`require` before it falls back to its labelled stand-in. What :func:`require` does is
one policy for the whole process, set by whoever runs the experiment:

- outside :func:`data_policy` (library use, the ``smoke`` and ``cpu`` profiles): nothing, the
  loader falls back and its ``source`` says so;
- inside ``data_policy(strict=True)`` (the ``full`` profile without ``allow_stand_in``), or when
  the loader was called with ``strict=True``: :class:`MissingData` is raised, naming the data set,
  what was looked for and where, and the command that gets it (``flowjax-thesis data get ...``)
  where one exists. Loaders load data before any training, so a strict run stops before it
  spends an accelerator's time on a stand-in.

The policy lives in a :class:`contextvars.ContextVar`, not in every experiment: loaders called
deep inside model code (PSR's TFDS sets, the DAPPER corpora) obey it too, and experiments need
no per-call flag. ``data_policy`` also collects the :class:`DataUsed` records, which the CLI
writes to ``summary.json`` as ``"data"`` (:meth:`DataLog.summary`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

ALLOW_HINT = "--set allow_stand_in=true"


class MissingData(FileNotFoundError):
    """A real data set is missing and stand-ins are not allowed.

    Attributes: ``name`` (the data set), ``looked_for`` (one text per place searched: files,
    cache, TFDS names, with where), ``command`` (what fetches it, or None), ``stand_in`` (what
    would have replaced it), ``why`` (which policy refused the stand-in).
    """

    def __init__(
        self,
        name: str,
        looked_for: Sequence[str],
        command: str | None = None,
        stand_in: str | None = None,
        why: str = "",
    ):
        self.name = name
        self.looked_for = tuple(looked_for)
        self.command = command
        self.stand_in = stand_in
        self.why = why
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"data set {self.name!r} not found: looked for " + "; ".join(self.looked_for)
        if self.command:
            text += f". Get it with: {self.command}"
        else:
            text += (
                ". No `flowjax-thesis data get` command fetches it: provide it at one of those "
                "places"
            )
        if self.why:
            text += f". {self.why}"
        if self.stand_in:
            text += f"; {ALLOW_HINT} runs on the stand-in instead ({self.stand_in})"
        return text


@dataclass(frozen=True)
class DataUsed:
    """One data set a run used: ``name``, the loader's ``source`` sentence, and ``stand_in``
    (True for an offline replacement that is not the source's data, e.g. scikit-learn digits
    for MNIST)."""

    name: str
    source: str
    stand_in: bool

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DataLog:
    """The policy of one run (``strict``, ``why``) and the data sets its loaders reported."""

    strict: bool = False
    why: str = ""
    used: list[DataUsed] = field(default_factory=list)

    def record(self, item: DataUsed) -> None:
        if item not in self.used:
            self.used.append(item)

    @property
    def stand_in(self) -> bool:
        return any(u.stand_in for u in self.used)

    def summary(self) -> dict | None:
        """``{"name", "source", "stand_in"}`` (plus ``"sets"`` when several were used), or
        None when no loader reported anything (generated or analytic data)."""
        if not self.used:
            return None
        if len(self.used) == 1:
            return self.used[0].as_dict()
        return {
            "name": ", ".join(dict.fromkeys(u.name for u in self.used)),
            "source": "; ".join(dict.fromkeys(u.source for u in self.used)),
            "stand_in": self.stand_in,
            "sets": [u.as_dict() for u in self.used],
        }


_CURRENT: contextvars.ContextVar[DataLog | None] = contextvars.ContextVar(
    "flowjax_thesis_data_policy", default=None
)


@contextlib.contextmanager
def data_policy(strict: bool, why: str = "") -> Iterator[DataLog]:
    """Within the block, loaders refuse stand-ins when ``strict`` (``why`` is added to the
    error, e.g. "the full profile does not use stand-in data"); yields the run's
    :class:`DataLog`."""
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be True or False, got {strict!r}")
    log = DataLog(strict, why)
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)


def current() -> DataLog | None:
    """The :class:`DataLog` of the enclosing :func:`data_policy`, or None."""
    return _CURRENT.get()


def is_strict(strict: bool | None = None) -> bool:
    """A loader's ``strict`` argument, or (None) the enclosing policy's (False outside one)."""
    if strict is not None:
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True, False or None, got {strict!r}")
        return strict
    log = current()
    return bool(log and log.strict)


def require(
    name: str,
    looked_for: Sequence[str],
    *,
    command: str | None = None,
    stand_in: str | None = None,
    strict: bool | None = None,
) -> None:
    """Called by a loader that did not find ``name``: raises :class:`MissingData` when strict
    (see :func:`is_strict`), returns otherwise (the loader then uses ``stand_in``)."""
    if is_strict(strict):
        log = current()
        why = log.why if (strict is None and log is not None) else ""
        raise MissingData(name, looked_for, command, stand_in, why)


def note_used(name: str, source: str, stand_in: bool) -> DataUsed:
    """Records that the current run uses this data set (a no-op outside a policy)."""
    item = DataUsed(str(name), str(source), bool(stand_in))
    log = current()
    if log is not None:
        log.record(item)
    return item
