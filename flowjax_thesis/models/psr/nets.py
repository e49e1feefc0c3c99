"""PSR networks: the DenseNet-style LR encoder ``h`` and the per-scale upsamplers ``u_l``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from flowjax_thesis.nets.patch_conv import Conv, ConvTranspose


class DenseNetEncoder(nn.Module):
    """``h(x)``: a 3x3 stem, ``blocks`` dense blocks of ``layers`` 3x3 convolutions each
    (every layer sees the concatenation of all earlier feature maps and adds ``growth``
    channels), a 1x1 transition after each block; ``features`` output channels at LR size."""

    features: int = 32
    growth: int = 16
    layers: int = 2
    blocks: int = 2

    @nn.compact
    def __call__(self, x):
        h = Conv(2 * self.growth, (3, 3))(x - 0.5)
        for _ in range(self.blocks):
            for _ in range(self.layers):
                h = jnp.concatenate([h, Conv(self.growth, (3, 3))(nn.relu(h))], -1)
            h = Conv(self.features, (1, 1))(nn.relu(h))
        return h


class Upsampler(nn.Module):
    """``u_l``: reshapes LR features ``(h, w, F)`` to ``(size, size', F)`` with stride-2
    transposed convolutions (or stride-2 convolutions when the scale is coarser than the LR
    input), then a 3x3 convolution that refines the features for this scale."""

    target_hw: tuple[int, int]
    features: int = 16

    @nn.compact
    def __call__(self, h):
        size = h.shape[-3]
        target = self.target_hw[0]
        while size < target:
            h = nn.relu(ConvTranspose(self.features, (3, 3), strides=(2, 2))(h))
            size *= 2
        while size > target:
            h = nn.relu(Conv(self.features, (3, 3), strides=(2, 2))(h))
            size //= 2
        return Conv(self.features, (3, 3))(nn.relu(h))


class ImageFeatures(nn.Module):
    """The conditioning network of the image PSR flow: ``[u_l(h(x)) for each scale l]``.

    ``x`` has shape ``batch + (h, w, C)`` (any batch dims, kept in the outputs); entry ``l`` of the
    result has shape ``batch + sizes[l] + (features,)``."""

    sizes: tuple[tuple[int, int], ...]
    features: int = 16
    encoder_features: int = 32
    growth: int = 16
    dense_layers: int = 2
    dense_blocks: int = 2

    @nn.compact
    def __call__(self, x):
        batch = x.shape[:-3]
        h = x.reshape((-1,) + x.shape[-3:])
        h = DenseNetEncoder(
            self.encoder_features, self.growth, self.dense_layers, self.dense_blocks
        )(h)
        out = []
        for hw in self.sizes:
            v = Upsampler(tuple(hw), self.features)(h)
            out.append(v.reshape(batch + v.shape[1:]))
        return out
