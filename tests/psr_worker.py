"""Trains the chapter-6 models a few steps through the engine on a 1-device and on a 4-device
mesh and saves both parameter sets; run by test_psr.py as a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``.

    python tests/psr_worker.py OUT.npz

``train_psr(..., mesh=...)`` replicates the state and shards every batch over the mesh; the data,
keys and settings are fixed, so both meshes must end with the same parameters.
"""

import sys

import jax
import numpy as np

from flowjax_thesis.models.psr import (
    DropoutStudent,
    image_nll,
    image_psr_flow,
    psr_optimizer,
    train_psr,
    vector_psr_flow,
)
from flowjax_thesis.objectives import max_likelihood_loss
from flowjax_thesis.train import data_mesh, gradient_transition

STEPS, BATCH = 3, 8


def trainings():
    """``(transition, params, data, mode)`` of the vector flow (scanned chunks), the MC-dropout
    student (dropout keys per example) and the image flow (``mode="step"``, convolutions)."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(32, 2)).astype(np.float32)
    x = np.round(y[:, :1]).astype(np.float32)
    flow = vector_psr_flow(2, 1, num_layers=1, hidden=(8,), features=4)
    params = flow.data_init(flow.init(jax.random.PRNGKey(0)), y, x)
    opt = psr_optimizer(1e-2, STEPS)
    yield gradient_transition(max_likelihood_loss(flow), opt), params, (y, x), "scan"
    drop = DropoutStudent(2, (8,), 0.2)
    yield gradient_transition(drop.loss, opt), drop.init(jax.random.PRNGKey(2), 1), (y, x), "scan"
    y_int = rng.integers(0, 5, size=(16, 4, 4, 1))
    img = image_psr_flow((4, 4, 1), scale=2, num_levels=0, steps_per_scale=1, conv_width=4,
                         features=2, encoder_features=4, growth=2, dense_layers=1, dense_blocks=1,
                         cond_hidden=(4,))  # fmt: skip
    data = (y_int, y_int[:, ::2, ::2])
    yield gradient_transition(image_nll(img, 5), opt), img.init(jax.random.PRNGKey(4)), data, "step"


def main(out: str) -> None:
    devices = jax.devices()
    assert len(devices) == 4, f"run with 4 simulated devices, got {len(devices)}"
    arrays = {}
    for i, (transition, params, data, mode) in enumerate(trainings()):
        for j, a in enumerate(jax.tree.leaves(params)):
            arrays[f"start_{i}_{j}"] = np.asarray(a)
        for n in (1, 4):
            result = train_psr(
                transition, params, data, key=jax.random.PRNGKey(10 + i), steps=STEPS,
                batch_size=BATCH, mode=mode, mesh=data_mesh(devices[:n]),
            )  # fmt: skip
            for j, a in enumerate(jax.tree.leaves(result.state.params)):
                arrays[f"devices{n}_{i}_{j}"] = np.asarray(a)
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
