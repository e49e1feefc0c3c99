"""flax.linen networks used as conditioners, encoders and decoders."""

from flowjax_thesis.nets.conv import ConvNet
from flowjax_thesis.nets.made import MADE, made_masks
from flowjax_thesis.nets.mlp import MLP

__all__ = ["MLP", "MADE", "made_masks", "ConvNet"]
