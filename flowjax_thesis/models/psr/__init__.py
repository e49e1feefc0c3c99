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

Every PSR model is a :class:`~flowjax_thesis.flows.Flow` whose context is the LR input ``x``
(its first layer runs a trainable encoder of ``x``, so the encoder's parameters are the flow's):
``flow.log_prob(params, y, x)`` is ``log p(y | x)`` and ``flow.sample(params, key, context=x,
temperature=t)`` draws one ``y`` per row of ``x`` (``t = 0``: ``f(0; x)``, Flow's convention).

One concept per module:

- :mod:`.conditioning`: the encoder-in-front layer (:class:`Encoded`) and per-scale features
  (:class:`AtScale`);
- :mod:`.nets`: the LR encoder (DenseNet-style), the per-scale upsamplers and both together;
- :mod:`.vector`: :func:`vector_psr_flow`, vectors ``y in R^D`` given ``x in R^d`` (the student of
  the student-teacher evaluation, section 6.4);
- :mod:`.image`: :func:`image_psr_flow`, images given an LR image (one full-resolution
  checkerboard scale, then the foundation's ``MultiScale``), its loss on integer pixels,
  nearest / bicubic resampling;
- :mod:`.joint`: :class:`JointPSR`, ``p(x, y) = p(y | x) p(x)`` from two flows (eqs. 6.5-6.7);
- :mod:`.baselines`: the Gaussian-process and fixed-rate MC-dropout students;
- :mod:`.concrete_dropout`: the concrete-dropout student (learned rates, the thesis's baseline);
- :mod:`.metrics`: RMSE, EMD, PSNR, SSIM, pixel diversity;
- :mod:`.training`: the optimizer every PSR training uses with the engine.
"""

from flowjax_thesis.models.psr.baselines import DropoutNet, DropoutStudent, GPStudent
from flowjax_thesis.models.psr.concrete_dropout import (
    ConcreteDropoutNet,
    ConcreteDropoutStudent,
    concrete_regularizer,
)
from flowjax_thesis.models.psr.conditioning import AtScale, Encoded
from flowjax_thesis.models.psr.image import (
    bin_centres,
    dequantize,
    downsample_nearest,
    features,
    glow_steps,
    image_nll,
    image_psr_flow,
    psr_scale,
    upsample_bicubic,
    upsample_nearest,
)
from flowjax_thesis.models.psr.joint import JointPSR, prior_flow, ridge_norm
from flowjax_thesis.models.psr.metrics import emd, have_ssim, pixel_diversity, psnr, rmse, ssim
from flowjax_thesis.models.psr.nets import DenseNetEncoder, ImageFeatures, Upsampler
from flowjax_thesis.models.psr.training import psr_optimizer, train_psr
from flowjax_thesis.models.psr.vector import vector_psr_flow

__all__ = [
    "Encoded",
    "AtScale",
    "DenseNetEncoder",
    "Upsampler",
    "ImageFeatures",
    "vector_psr_flow",
    "image_psr_flow",
    "glow_steps",
    "psr_scale",
    "features",
    "image_nll",
    "bin_centres",
    "dequantize",
    "JointPSR",
    "prior_flow",
    "downsample_nearest",
    "upsample_nearest",
    "upsample_bicubic",
    "ridge_norm",
    "psr_optimizer",
    "train_psr",
    "GPStudent",
    "DropoutNet",
    "DropoutStudent",
    "ConcreteDropoutNet",
    "ConcreteDropoutStudent",
    "concrete_regularizer",
    "rmse",
    "emd",
    "psnr",
    "ssim",
    "have_ssim",
    "pixel_diversity",
]
