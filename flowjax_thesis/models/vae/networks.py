"""Gated convolutional encoder and decoder of the thesis's VAEs (section 4.7.1).

Every hidden layer is a gated convolution ``h_l = (W_l * h_{l-1} + b_l) * sigmoid(V_l * h_{l-1}
+ c_l)`` (one convolution with twice the channels, split in two). For an ``H x W`` image with
``H, W`` divisible by 4:

encoder  GatedConv(16, k, stride 2) -> GatedConv(32, k, stride 2) -> GatedConv(256, (H/4, W/4),
         valid) -> a vector ``h`` of 256 features (the heads for the posterior read it)
decoder  z as a 1x1 image -> GatedConvT(32, (H/4, W/4), valid) -> GatedConvT(16, k, stride 2)
         -> GatedConvT(16, k, stride 2) -> Conv(out, 1x1)

with ``k = 5`` for 28x28 (and 28x20) images, the thesis's kernels: 28 -> 14 -> 7 -> 1, its
``Conv(1, 16, k=5, p=2, s=2)``, ``Conv(16, 32, k=5, p=2, s=2)``, ``Conv(32, 256, k=7, p=0)``;
and ``k = 3`` for small images (8x8 -> 4 -> 2 -> 1). The thesis's printed decoder strides and
paddings do not produce a 28x28 image (``ConvT(32, 16, k=5, p=0, s=2)`` maps 7x7 to 17x17); we
use the mirror image of the encoder, which does.

The convolutions are :mod:`flowjax_thesis.nets.patch_conv`'s drop-ins for flax's ``Conv`` and
``ConvTranspose`` (the same parameters and function, computed as matrix products because XLA's
CPU backend runs ``lax.conv`` several times slower inside the engine's ``lax.scan``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flowjax_thesis.nets.patch_conv import Conv, ConvTranspose


class GatedConv(nn.Module):
    features: int
    kernel: Sequence[int]
    strides: int = 1
    padding: str | Sequence = "SAME"
    transpose: bool = False

    @nn.compact
    def __call__(self, x):
        conv = ConvTranspose if self.transpose else Conv
        strides = (self.strides, self.strides)
        out = conv(2 * self.features, tuple(self.kernel), strides, self.padding)(x)
        a, g = jnp.split(out, 2, axis=-1)
        return a * nn.sigmoid(g)


def small_kernel(image_shape) -> int:
    return 5 if min(image_shape[:2]) >= 16 else 3


def check_image_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[0] % 4 or shape[1] % 4:
        raise ValueError(
            f"images must be (H, W, C) with H and W divisible by 4 (two stride-2 layers), got "
            f"{shape}"
        )
    return shape


class Encoder(nn.Module):
    """Images ``(..., H, W, C)`` -> features ``(..., hidden)``."""

    image_shape: tuple[int, int, int]
    widths: tuple[int, int] = (16, 32)
    hidden: int = 256

    @nn.compact
    def __call__(self, x):
        h, w, _ = self.image_shape
        k = small_kernel(self.image_shape)
        pad = ((k // 2, k // 2), (k // 2, k // 2))
        x = GatedConv(self.widths[0], (k, k), 2, pad)(x)
        x = GatedConv(self.widths[1], (k, k), 2, pad)(x)
        x = GatedConv(self.hidden, (h // 4, w // 4), 1, "VALID")(x)
        return x.reshape(x.shape[:-3] + (self.hidden,))


class Decoder(nn.Module):
    """Latents ``(..., d)`` -> per-pixel outputs ``(..., H, W, out_channels)``."""

    image_shape: tuple[int, int, int]
    out_channels: int
    widths: tuple[int, int] = (16, 32)

    @nn.compact
    def __call__(self, z):
        h, w, _ = self.image_shape
        k = small_kernel(self.image_shape)
        x = z.reshape(z.shape[:-1] + (1, 1, z.shape[-1]))
        x = GatedConv(self.widths[1], (h // 4, w // 4), 1, "VALID", transpose=True)(x)
        x = GatedConv(self.widths[0], (k, k), 2, "SAME", transpose=True)(x)
        x = GatedConv(self.widths[0], (k, k), 2, "SAME", transpose=True)(x)
        return Conv(self.out_channels, (1, 1))(x)
