"""Full-mesh collectives, as HCCL runs them inside a fully connected server.

On a server whose accelerators are all directly linked (Atlas 800T A2: 8 Ascend 910B, 7 HCCS
links each), a ring uses one link per step and leaves the other six idle.  HCCL picks its
*Mesh* algorithm there (CANN HCCL user guide, "Collective Communication Algorithms": the
intra-server algorithms Mesh, Ring, Double-Ring and Star are selected from the hardware
topology): every rank exchanges its share with every other rank directly, all links at once.

===================  =====================================================================
``reduce_scatter``   every rank sends slice ``j`` (``S/n``) to rank ``j``, all at once
``all_gather``       every rank sends its slice (``S/n``) to every other rank, all at once
``all_reduce``       the mesh reduce-scatter, then the mesh all-gather of the reduced slices
                     (a rank's all-gather sends wait for every slice it reduces)
===================  =====================================================================

Each of the ``n - 1`` links of a rank carries ``S/n`` per phase, so a phase takes
``S / (n B_link)`` against a ring's ``(n-1) S / (n B_link)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from netsim.collectives.plan import PlanBuilder
from netsim.collectives.registry import PlanRequest, register_algorithm

__all__ = ["mesh"]


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    src, dst = np.nonzero(~np.eye(n, dtype=bool))
    return src.astype(np.int64), dst.astype(np.int64)


@register_algorithm(
    ("all_reduce", "reduce_scatter", "all_gather"),
    "mesh",
    description="full mesh: every rank exchanges its slice with every other rank at once (HCCL Mesh)",
)
def mesh(req: PlanRequest, b: PlanBuilder) -> dict[str, Any]:
    n = req.n
    block = req.nbytes / n
    src, dst = _pairs(n)
    first = b.add_batch(src, dst, block, 0)
    if req.op != "all_reduce":
        return {"phases": 1}
    # rank r's all-gather sends wait for the n-1 slices reduced into it
    into = np.full((n, n - 1), -1, dtype=np.int64)
    fill = np.zeros(n, dtype=np.int64)
    for t, d in zip(first.tolist(), dst.tolist(), strict=True):
        into[d, fill[d]] = t
        fill[d] += 1
    b.add_batch(src, dst, block, 1, into[src])
    return {"phases": 2}
