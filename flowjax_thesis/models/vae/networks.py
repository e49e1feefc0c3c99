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

The decoder's stride-2 transposed convolutions are computed by :class:`SubpixelConvTranspose`:
the same parameters and the same function as ``flax.linen.ConvTranspose(strides=2,
padding="SAME")`` (tested to float precision), rearranged into one stride-1 convolution with
``s * s`` times the output channels followed by a depth-to-space shuffle. XLA's CPU backend
computes the input-dilated convolution of ``ConvTranspose`` (and its gradient) on a slow generic
path; the stride-1 form runs on its fast convolution kernels (a training step of the 28x28 VAE
is about twice as fast).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax


def _same_pad_before(kernel: int, stride: int) -> int:
    """The leading padding of ``lax.conv_transpose(..., padding="SAME")`` (jax's rule)."""
    pad_len = kernel + stride - 2
    return kernel - 1 if stride > kernel - 1 else int(np.ceil(pad_len / 2))


def _phase_taps(kernel: int, stride: int):
    """Selection ``(n, stride, kernel)``: tap ``t`` of the transposed kernel feeds output phase
    ``a`` from input offset ``o`` (row ``o - lo``), and the stride-1 padding ``(-lo, hi)``."""
    pad = _same_pad_before(kernel, stride)
    entries = [
        (a, t, (a + t - pad) // stride)
        for a in range(stride)
        for t in range(kernel)
        if (a + t - pad) % stride == 0
    ]
    offsets = [o for _, _, o in entries]
    lo, hi = min(offsets), max(offsets)
    sel = np.zeros((hi - lo + 1, stride, kernel), np.float32)
    for a, t, o in entries:
        sel[o - lo, a, t] = 1.0
    return sel, (-lo, hi)


def subpixel_conv_transpose(x, kernel, stride: int):
    """``lax.conv_transpose(x, kernel, (s, s), "SAME")`` (NHWC, HWIO, ``transpose_kernel=False``)
    as one stride-1 convolution with ``s * s`` phases of output channels and a depth-to-space
    shuffle: ``out[s i + a, s j + b] = phase (a, b) at (i, j)``."""
    kh, kw, _, cout = kernel.shape
    sel_h, pad_h = _phase_taps(kh, stride)
    sel_w, pad_w = _phase_taps(kw, stride)
    k2 = jnp.einsum("pat,qbu,tuio->pqiabo", sel_h, sel_w, kernel)
    k2 = k2.reshape(k2.shape[:3] + (stride * stride * cout,))
    y = lax.conv_general_dilated(
        x, k2, (1, 1), (pad_h, pad_w), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    *batch, h, w, _ = y.shape
    y = y.reshape((*batch, h, w, stride, stride, cout))
    y = jnp.moveaxis(y, -3, -4)  # (..., h, s_a, w, s_b, cout)
    return y.reshape((*batch, h * stride, w * stride, cout))


class SubpixelConvTranspose(nn.Module):
    """``nn.ConvTranspose(features, kernel, strides=(s, s), padding="SAME")`` with the same
    parameters (``kernel`` HWIO, ``bias``) and initialisers, computed by
    :func:`subpixel_conv_transpose`."""

    features: int
    kernel_size: tuple[int, int]
    stride: int = 2

    @nn.compact
    def __call__(self, x):
        shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        flat = x.reshape((-1,) + x.shape[-3:])
        y = subpixel_conv_transpose(flat, kernel.astype(x.dtype), self.stride)
        return y.reshape(x.shape[:-3] + y.shape[-3:]) + bias


class GatedConv(nn.Module):
    features: int
    kernel: Sequence[int]
    strides: int = 1
    padding: str | Sequence = "SAME"
    transpose: bool = False

    @nn.compact
    def __call__(self, x):
        if self.transpose and self.strides > 1 and self.padding == "SAME":
            # the same parameters (and names) as nn.ConvTranspose, on the fast path
            conv = SubpixelConvTranspose(
                2 * self.features, tuple(self.kernel), self.strides, name="ConvTranspose_0"
            )
            out = conv(x)
        else:
            conv = nn.ConvTranspose if self.transpose else nn.Conv
            out = conv(
                2 * self.features,
                tuple(self.kernel),
                strides=(self.strides, self.strides),
                padding=self.padding,
            )(x)
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
        return nn.Conv(self.out_channels, (1, 1))(x)
