"""The training engine: transitions, the fit loop, batch sources, checkpoints and data
parallelism."""

from flowjax_thesis.train.batches import EpochBatches, epoch_batches
from flowjax_thesis.train.checkpoints import Checkpointer, CheckpointError
from flowjax_thesis.train.fit import DivergenceError, FitResult, Interrupted, fit
from flowjax_thesis.train.gradient import TrainState, gradient_transition
from flowjax_thesis.train.recipes import fit_ml, fit_vi
from flowjax_thesis.train.sharding import data_mesh, maybe_initialize_distributed, put_replicated
from flowjax_thesis.train.transition import Transition

__all__ = [
    "Transition",
    "TrainState",
    "gradient_transition",
    "fit",
    "fit_vi",
    "fit_ml",
    "FitResult",
    "DivergenceError",
    "Interrupted",
    "Checkpointer",
    "CheckpointError",
    "epoch_batches",
    "EpochBatches",
    "data_mesh",
    "put_replicated",
    "maybe_initialize_distributed",
]
