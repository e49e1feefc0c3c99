"""A small convolutional conditioner for image couplings (zero-initialised output); its
convolutions are :mod:`.patch_conv`'s drop-ins for flax's (fast inside the engine's scan)."""

from __future__ import annotations

import flax.linen as nn

from flowjax_thesis.nets.checks import check_int
from flowjax_thesis.nets.mlp import activation
from flowjax_thesis.nets.patch_conv import Conv


class ConvNet(nn.Module):
    """``depth`` 3x3 convolutions of ``width`` channels, a 1x1 in the middle, zero 3x3 out.

    This is the Glow conditioner shape (3x3 -> 1x1 -> 3x3, zero-initialised last layer) with
    a configurable number of hidden convolutions. Works on ``(H, W, C)`` or batched inputs.
    """

    width: int
    out: int
    depth: int = 2
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        check_int("ConvNet", "width", self.width)
        check_int("ConvNet", "out", self.out)
        check_int("ConvNet", "depth", self.depth, minimum=0)
        for i in range(self.depth):
            kernel = (1, 1) if (i == self.depth - 1 and self.depth > 1) else (3, 3)
            x = act(Conv(self.width, kernel)(x))
        return Conv(
            self.out, (3, 3), kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros
        )(x)
