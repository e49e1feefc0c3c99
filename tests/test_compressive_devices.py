"""Compressive flows train data-parallel: 1 and 4 simulated devices give the same parameters
(gradient training of a VAE-step flow and the PPCA flow's EM + gradient transition), both run
in one subprocess with 4 simulated devices (no mesh, then a 4-device mesh)."""

import os
import subprocess
import sys

import numpy as np
import pytest

CODE = r"""
import sys
import jax, numpy as np, optax
from flowjax_thesis.data.images import load_images
from flowjax_thesis.models.compressive.images import (
    ImageModel, build_flow, gradient_training, ppca_flow_transition)
from flowjax_thesis.train import data_mesh, fit
from flowjax_thesis.train.sharding import to_host

out = sys.argv[1]
assert len(jax.devices()) == 4, jax.devices()
data = load_images("digits", seed=0)
arrays = {}
runs = [(c, name, mesh) for c in ("vae", "ppca") for name, mesh in (("one", None),
                                                                      ("four", data_mesh()))]
for compression, name, mesh in runs:
  flow = build_flow(data.image_shape, compression, 16, steps_per_level=1, levels=1, width=8,
                  vae_hidden=(16,), conv_vae_width=8)
  model = ImageModel(flow, data.num_bins, "uniform")
  k0 = jax.random.PRNGKey(0)
  params = model.data_init(model.init(k0), data.train[:64], k0)
  opt = optax.adam(1e-3)
  transition = (ppca_flow_transition(model, opt, anneal_steps=4) if compression == "ppca"
                else gradient_training(model, opt))
  res = fit(transition, transition.init(params), data.train[:256], key=jax.random.PRNGKey(1),
            steps=6, batch_size=32, chunk_size=3, progress=False, mesh=mesh)
  for i, x in enumerate(jax.tree.leaves(to_host(res.state))):
      arrays[f'{name}_{compression}{i}'] = np.asarray(x)
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       to_host(res.state.params), params)
  arrays[f'moved_{name}_{compression}'] = max(jax.tree.leaves(moved))
np.savez(out, **arrays)
"""


@pytest.mark.integration
def test_one_and_four_devices_agree(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    path = tmp_path / "params.npz"
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    one = {k[4:]: v for k, v in arrays.items() if k.startswith("one_")}
    four = {k[5:]: v for k, v in arrays.items() if k.startswith("four_")}
    assert one.keys() == four.keys()
    assert sum(k.startswith("vae") for k in one) > 4 and sum(k.startswith("ppca") for k in one) > 4
    for k in one:
        np.testing.assert_allclose(four[k], one[k], rtol=2e-4, atol=2e-5, err_msg=k)
    # both trainings moved their parameters (the agreement is not of untouched inits)
    for compression in ("vae", "ppca"):
        assert float(arrays[f"moved_one_{compression}"]) > 1e-4, compression
