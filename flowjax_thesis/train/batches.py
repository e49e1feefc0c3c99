"""Batch sources for :func:`~flowjax_thesis.train.fit`: pure functions of the step index.

A batch source is any callable ``step -> batch`` (a pytree of host arrays). Because it depends
on the step alone, a resumed run draws exactly the batches an uninterrupted run would. Without a
source, ``fit`` draws ``batch_size`` i.i.d. indices per step (:func:`iid_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def num_examples(data) -> int | None:
    """The shared leading (example) axis of a data pytree; None for no data."""
    leaves = jax.tree.leaves(data)
    if not leaves:
        return None
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if -1 in sizes:
        raise ValueError("every data array needs a leading example axis; got a scalar")
    if len(sizes) != 1:
        raise ValueError(f"all data arrays need the same leading (example) axis, got sizes {sizes}")
    return sizes.pop()


def iid_batch(data, key, batch_size: int | None, n: int | None):
    """``batch_size`` rows of ``data`` drawn i.i.d. with ``key`` (all of it when ``batch_size``
    is None or not smaller than ``n``). Works inside and outside ``jit``."""
    if n is None:
        return None
    if batch_size is None or batch_size >= n:
        return data
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)


@dataclass(frozen=True)
class EpochBatches:
    """Epochs over ``data`` in a seeded random order: step ``s`` is batch ``s % steps_per_epoch``
    of epoch ``s // steps_per_epoch``. With ``drop_remainder`` every batch has ``batch_size``
    rows (as ``mode="scan"`` needs); otherwise the last batch of an epoch is smaller."""

    data: Any
    batch_size: int
    seed: int
    drop_remainder: bool = True
    shuffle: bool = True

    @property
    def num_examples(self) -> int:
        return num_examples(self.data)

    @property
    def steps_per_epoch(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def indices(self, step: int) -> np.ndarray:
        epoch, i = divmod(int(step), self.steps_per_epoch)
        n = self.num_examples
        order = (
            np.random.default_rng([self.seed, epoch]).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        return order[i * self.batch_size : (i + 1) * self.batch_size]

    def __call__(self, step: int):
        idx = self.indices(step)
        return jax.tree.map(lambda x: np.asarray(x)[idx], self.data)


def epoch_batches(
    data, batch_size: int, key, drop_remainder: bool = True, shuffle: bool = True
) -> EpochBatches:
    """Epochs over ``data`` in an order seeded by ``key`` (see :class:`EpochBatches`)."""
    n = num_examples(data)
    if n is None or n == 0:
        raise ValueError("epoch_batches needs non-empty data")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_remainder and batch_size > n:
        raise ValueError(
            f"batch_size {batch_size} is larger than the data ({n} examples) and "
            "drop_remainder=True would leave no batch"
        )
    seed = int(np.asarray(jax.random.key_data(key) if _typed(key) else key).ravel()[-1])
    return EpochBatches(data, int(batch_size), seed, drop_remainder, shuffle)


def _typed(key) -> bool:
    return jnp.issubdtype(getattr(key, "dtype", np.float32), jax.dtypes.prng_key)
