"""Probabilistic super-resolution (PSR) flows, chapter 6.

``x = pi(y)`` is a low-resolution (LR) or coarsened version of ``y``. A *conditional PSR flow*
models ``p(y | x)`` (eq. 6.4): the LR input goes through an encoder ``h`` (not invertible, so any
network), per-scale upsampling networks ``u_l`` turn ``h(x)`` into features ``v_l`` shaped like
the flow's latent at scale ``l``, and every flow step is conditioned on ``v_l`` (eq. 6.8)::

    Cond. ActNorm:   s, b = c(v);  y = s * z + b
    Cond. 1x1 conv:  W = c(v);     y = W z
    Cond. coupling:  y_a = exp(2 tanh(s(z_b, v) / 2)) * z_a + t(z_b, v),  y_b = z_b

(the foundation's ``ActNorm``, ``Conv1x1`` and ``Coupling(scale_bound=2)``). Sign convention as
everywhere in the package: ``forward`` maps base -> data (sampling), ``inverse`` data -> base.

One concept per module:

- :mod:`.nets`: the LR encoder (DenseNet-style) and the per-scale upsamplers;
- :mod:`.vector`: :class:`VectorPSR`, vectors ``y in R^D`` given ``x in R^d`` (the student of the
  student-teacher evaluation, section 6.4);
- :mod:`.image`: :class:`ImagePSR`, images given an LR image (one full-resolution checkerboard
  scale, then the foundation's ``MultiScale``), and nearest / bicubic resampling;
- :mod:`.joint`: :class:`JointPSR`, ``p(x, y) = p(y | x) p(x)`` (eqs. 6.5-6.7);
- :mod:`.baselines`: the Gaussian-process and MC-dropout students;
- :mod:`.metrics`: RMSE, EMD, PSNR, SSIM, pixel diversity.
"""

from flowjax_thesis.models.psr.baselines import DropoutNet, DropoutStudent, GPStudent
from flowjax_thesis.models.psr.image import (
    ImagePSR,
    downsample_nearest,
    upsample_bicubic,
    upsample_nearest,
)
from flowjax_thesis.models.psr.joint import JointPSR, prior_flow, ridge_norm
from flowjax_thesis.models.psr.metrics import emd, have_ssim, pixel_diversity, psnr, rmse, ssim
from flowjax_thesis.models.psr.nets import DenseNetEncoder, Upsampler
from flowjax_thesis.models.psr.vector import VectorPSR

__all__ = [
    "DenseNetEncoder",
    "Upsampler",
    "VectorPSR",
    "ImagePSR",
    "JointPSR",
    "prior_flow",
    "downsample_nearest",
    "upsample_nearest",
    "upsample_bicubic",
    "ridge_norm",
    "GPStudent",
    "DropoutNet",
    "DropoutStudent",
    "rmse",
    "emd",
    "psnr",
    "ssim",
    "have_ssim",
    "pixel_diversity",
]
