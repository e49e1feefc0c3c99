"""Orbax checkpoints of a training: save by step, restore the newest one that can be read.

A checkpoint that cannot be read (corrupt, truncated, zero-filled) is skipped with a warning and
the next older one is tried; if none can be read, :class:`CheckpointError` says so in one line and
names the directory. Orbax writes each checkpoint to a temporary folder first and renames it when
complete, so a run killed while saving leaves the older checkpoints intact.
"""

from __future__ import annotations

import logging
import os
import warnings

import jax
import orbax.checkpoint as ocp


class _QuietSaves(logging.Filter):
    """Drops orbax's "Waiting for previous save to complete took N seconds" warning: saves here
    are synchronous by design (``save`` waits for each one), so the wait is expected, and the
    line would otherwise repeat at every checkpoint of a loaded machine's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Waiting for previous save to complete" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietSaves())


class CheckpointError(RuntimeError):
    """No checkpoint of a training could be read."""


class Checkpointer:
    """Thin orbax wrapper: saves a payload pytree by step; restores the newest readable one."""

    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep)
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps() or [])

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, payload: dict) -> None:
        if step in self.steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(payload))
        self.manager.wait_until_finished()

    def restore(self, template: dict, step: int | None = None) -> tuple[int, dict]:
        """``(step, payload)`` of checkpoint ``step``, or of the newest readable one."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        candidates = [step] if step is not None else self.steps()[::-1]
        errors = []
        for s in candidates:
            try:
                payload = self.manager.restore(s, args=ocp.args.StandardRestore(abstract))
            except Exception as err:  # orbax/tensorstore raise many kinds; all mean unreadable
                reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err)
                errors.append(s)
                warnings.warn(
                    f"checkpoint {self.path(s)} could not be read ({reason}); "
                    "trying the next older one",
                    stacklevel=2,
                )
                continue
            self._set_aside(errors)
            return s, payload
        raise CheckpointError(
            f"none of the checkpoints in {self.directory} (steps {errors}) could be read; "
            "move the directory away to start this training afresh"
        )

    def _set_aside(self, steps: list[int]) -> None:
        """Renames unreadable checkpoints to ``<step>.unreadable`` (kept for inspection, no
        longer listed), so that training can save those steps again."""
        for s in steps:
            os.replace(self.path(s), self.path(s) + ".unreadable")
        if steps:
            self.manager.reload()

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def close(self) -> None:
        self.manager.close()
