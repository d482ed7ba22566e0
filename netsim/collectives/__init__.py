"""Collectives: algorithms as pure plans, and the executor that runs them on the network.

* :mod:`~netsim.collectives.plan`: :class:`Plan` / :class:`Transfer` (plain data) and the builder.
* :mod:`~netsim.collectives.registry`: the algorithm registry and :func:`build_plan`.
* :mod:`~netsim.collectives.algorithms`: ring, double binary tree, halving-doubling,
  hierarchical, SHARP/NVLS in-network reduction, chains.
* :mod:`~netsim.collectives.exchanges`: all-to-all(v) (direct, pairwise, hierarchical,
  DeepEP-style), send/recv.
* :mod:`~netsim.collectives.executor`: :func:`run_collective` (a simpy process on a ``Network``)
  and :func:`simulate_collective` (one collective alone, seconds).
* :mod:`~netsim.collectives.nccl_tests`: nccl-tests conventions (bus bandwidth factors, the
  result table, size sweeps).
* :mod:`~netsim.collectives.reference`: ideal topologies for alpha-beta checks.
"""

# the built-in algorithms register themselves when their modules are imported (here, so that any
# import of netsim.collectives or a submodule of it has them; the registry imports none of them)
from netsim.collectives import algorithms as _algorithms  # noqa: F401
from netsim.collectives import exchanges as _exchanges  # noqa: F401
from netsim.collectives import groupwise as _groupwise  # noqa: F401
from netsim.collectives import mesh as _mesh  # noqa: F401
from netsim.collectives import pipelined as _pipelined  # noqa: F401
from netsim.collectives.executor import (
    CollectiveResult,
    accelerators,
    execute_plan,
    run_collective,
    simulate_collective,
)
from netsim.collectives.models import COLLECTIVE_MODELS, CollectiveModel
from netsim.collectives.plan import CollectiveError, Plan, PlanBuilder, TopologyView, Transfer
from netsim.collectives.registry import (
    OPS,
    PlanRequest,
    algorithm_names,
    build_plan,
    default_algorithm,
    register_algorithm,
)

__all__ = [
    "COLLECTIVE_MODELS",
    "OPS",
    "CollectiveError",
    "CollectiveModel",
    "CollectiveResult",
    "Plan",
    "PlanBuilder",
    "PlanRequest",
    "TopologyView",
    "Transfer",
    "accelerators",
    "algorithm_names",
    "build_plan",
    "default_algorithm",
    "execute_plan",
    "register_algorithm",
    "run_collective",
    "simulate_collective",
]
