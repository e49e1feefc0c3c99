"""A pytree node that carries static (hashable) information and no leaves.

Layers whose bijector needs the event shape keep it in their params as ``Static(shape)``: it is
invisible to ``jax.grad``, optax, ``vmap`` and checkpoints (no leaves), yet travels with the
params so ``bind(params)`` needs nothing else.
"""

from __future__ import annotations

from typing import Any

import jax


@jax.tree_util.register_pytree_node_class
class Static:
    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def tree_flatten(self):
        return (), self.value

    @classmethod
    def tree_unflatten(cls, value, children):
        return cls(value)

    def __repr__(self) -> str:
        return f"Static({self.value!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Static) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)
