"""Binary masks for coupling layers. ``True`` marks the coordinates a coupling keeps unchanged
(and conditions on), as in ``distrax.MaskedCoupling``; ``parity=1`` swaps the two halves."""

from __future__ import annotations

import numpy as np

VECTOR_MASKS = ("half", "alternate")
IMAGE_MASKS = ("checkerboard", "channel")


def coupling_mask(kind: str, event_shape: tuple[int, ...], parity: int = 0) -> np.ndarray:
    """The boolean mask of ``kind`` for ``event_shape``."""
    if kind == "half":
        n = event_shape[-1]
        mask = np.broadcast_to(np.arange(n) < n // 2, event_shape)
    elif kind == "alternate":
        mask = np.broadcast_to(np.arange(event_shape[-1]) % 2 == 0, event_shape)
    elif kind == "checkerboard":
        if len(event_shape) != 3:
            raise ValueError(f"checkerboard mask needs an (H, W, C) event, got {event_shape}")
        h, w, c = event_shape
        board = (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0
        mask = np.broadcast_to(board[:, :, None], event_shape)
    elif kind == "channel":
        if len(event_shape) != 3 or event_shape[-1] < 2:
            raise ValueError(
                f"channel mask needs an (H, W, C) event with C >= 2, got {event_shape}"
            )
        c = event_shape[-1]
        mask = np.broadcast_to(np.arange(c) < c // 2, event_shape)
    else:
        raise ValueError(f"unknown mask {kind!r}; expected one of {VECTOR_MASKS + IMAGE_MASKS}")
    mask = np.array(mask, dtype=bool)
    return ~mask if parity % 2 else mask
