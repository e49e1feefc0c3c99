"""Peer benchmarks: the same flow training steps written with other libraries.

Nothing here imports ``flowjax_thesis``. Each peer function builds its model, warms up,
times ``steps`` training steps and returns a result dict (see ``_common.result``).
The peer libraries (torch, normflows, zuko, flowjax) are imported lazily inside the
functions; a missing one raises ``ImportError`` naming ``pip install flowjax_thesis[bench]``.

Run ``python -m benchmarks.peers planar|realnvp --steps N`` for a quick JSON report.
"""

from benchmarks.peers.planar_vi import (
    PLANAR_PEERS,
    flowjax_fit_helper,
    flowjax_planar,
    normflows_planar,
    torch_blog,
)
from benchmarks.peers.realnvp_density import (
    REALNVP_CONFIGS,
    REALNVP_PEERS,
    distrax_realnvp,
    flowjax_realnvp,
    normflows_realnvp,
    zuko_realnvp,
)

__all__ = [
    "PLANAR_PEERS",
    "REALNVP_CONFIGS",
    "REALNVP_PEERS",
    "distrax_realnvp",
    "flowjax_fit_helper",
    "flowjax_planar",
    "flowjax_realnvp",
    "normflows_planar",
    "normflows_realnvp",
    "torch_blog",
    "zuko_realnvp",
]
