"""The ``auto`` collective model: how a run is simulated, chosen from its size.

``auto`` is a rule, not a model: it resolves to one of the collective model objects registered in
:data:`netsim.collectives.models.COLLECTIVE_MODELS` (``exact``, ``stream``, ``coflow``; each
class's docstring repeats its error below), which the executor then asks how to run a collective.

``netsim run`` turns every collective of a training step into network flows.  The exact model
(one flow per step, chunk and rank pair) is the reference; its cost grows with the flows, and a
run of hundreds of GPUs has millions of them.  The faster models and plan approximations have a
measured error (docs: Performance, "Which model at which scale"; ``benchmarks/auto_model.py``
measures the rule below on the scenarios the docs show):

* ``stream``: a ring phase as one flow per ring link (replays within 0.3% of exact);
* ``coflow``: stream, and every all-to-all(v) phase as one coflow (replays within 0.5%;
  under ECMP a few percent, because a coflow keeps a rank pair's path for the step; the
  LocMoE study's lab-trace replays on 8 x ascend-910a: steps +1.3..+2.3%, all-to-all time
  3.5-14.5% short, ``reports/locmoe/model_check.csv``);
* ``routing_samples``: one routed token sample per (step, MoE layer), reused (0.03%);
* ``lockstep``: one rank per EP group simulated (0.00% with packet spraying, within 3% under
  ECMP).

``options.collective_model: auto`` (the default) applies this rule:

1. **Before planning**, from the topology and the workload: a run with at least
   :data:`LARGE_RUN_RANKS` ranks and an MoE layer with expert parallelism gets
   ``routing_samples: 1`` (unless it replays a routing trace) and ``lockstep`` (DeepSeek-V3 on
   2048 GPUs: 161 s -> 57 s).  Below that size routing and simulating every rank costs seconds.
2. **After planning**, from the plan: the number of flows the exact model would simulate
   (:func:`exact_flows`: point-to-point transfers, the rank pairs of every all-to-all(v), and
   the transfers of each collective's exact plan under the run's cost model).  At most
   :data:`EXACT_FLOW_LIMIT` flows: ``exact`` (a second or two on a laptop core).  More:
   ``coflow`` when the plan has all-to-all(v)s or is a lockstep plan, else ``stream`` (the two
   are the same for an every-rank plan without all-to-alls).  A lockstep plan's pipeline
   transfer is the merge of the unit's TP x DP instances: ``stream`` moves it as one flow per
   instance, ``coflow`` as one coflow, the same bytes (Llama 3 405B on 8,192 H100: about an hour
   -> 486 s of CPU; step time against ``stream``: -1.1% (Llama 3 405B at 512 GPUs), -0.7%
   (Narayanan 310B at 16 micro-batches), +0.35% (Narayanan 39B), identical on Korthikanti 175B;
   docs: Collectives, "Coflows").

What the user set explicitly (``--collective-model exact|stream|coflow``, ``--lockstep`` /
``options.lockstep``, ``--routing-samples`` / ``options.routing_samples``, ``all`` for every
all-to-all) is kept; the rule fills in the rest.  :class:`Choice` records the outcome and a
one-line reason, which the run prints and writes to ``summary.json`` (``model_choice``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

    from netsim.collectives.cost import CostModel
    from netsim.collectives.models import CollectiveModel
    from netsim.config.scenario import ScenarioOptions
    from netsim.config.workload import WorkloadSpec
    from netsim.workload.plan import Collective, StepPlan

__all__ = ["EXACT_FLOW_LIMIT", "LARGE_RUN_RANKS", "Choice", "choose_model", "choose_plan_options", "exact_flows"]

#: Largest exact flow count ``auto`` simulates exactly.  The exact model costs about 0.1-0.3 ms
#: of one core per flow in a training-step replay (the built-in default scenario: 2,817 flows,
#: 0.4 s; mixtral-8x7b on 4 nodes: 61,537 flows, 9.6 s; benchmarks/auto_model.py).
EXACT_FLOW_LIMIT = 20_000

#: Ranks from which ``auto`` routes one token sample per (step, MoE layer) and simulates one
#: rank per EP group (lockstep): DeepSeek-V3 on 256 h800 nodes (2048 GPUs) 161 s -> 57 s.
LARGE_RUN_RANKS = 1024


@dataclass(frozen=True)
class Choice:
    """How a run is simulated, and why (module doc).

    Attributes:
        requested: the ``collective_model`` option (``auto`` or an explicit model).
        collective_model: ``exact``, ``stream`` or ``coflow``.
        lockstep: one rank per lockstep unit is simulated.
        routing_samples: token samples routed per (step, MoE layer), ``None``: every all-to-all.
        exact_flows: flows the exact model would simulate (``auto`` only; a lower bound when
            it stopped counting above :data:`EXACT_FLOW_LIMIT`).
        reasons: what was decided and why, one phrase each.
    """

    requested: str
    collective_model: str
    lockstep: bool
    routing_samples: int | None
    exact_flows: int | None = None
    reasons: tuple[str, ...] = ()

    @property
    def model(self) -> CollectiveModel:
        """The registered :class:`~netsim.collectives.models.CollectiveModel` chosen."""
        from netsim.collectives.models import collective_model

        return collective_model(self.collective_model)

    @property
    def line(self) -> str:
        """One line for the summary and the report."""
        head = self.collective_model if self.requested != "auto" else f"auto: {self.collective_model}"
        extras = [
            x
            for x, on in (
                ("lockstep", self.lockstep),
                (f"routing samples {self.routing_samples}", self.routing_samples is not None),
            )
            if on
        ]
        if extras:
            head += " + " + " + ".join(extras)
        return head + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


def _accelerators(graph: nx.DiGraph) -> int:
    return sum(1 for _, a in graph.nodes(data=True) if a.get("kind") == "accelerator")


def choose_plan_options(
    options: ScenarioOptions, graph: nx.DiGraph, workload: WorkloadSpec
) -> tuple[bool, int | None, list[str]]:
    """Step 1 of the rule (module doc): ``(lockstep, routing_samples, reasons)`` for the plan."""
    samples_opt = options.routing_samples
    samples = None if samples_opt in (None, "all") else int(samples_opt)
    lockstep = bool(options.lockstep)
    if options.collective_model != "auto":
        return lockstep, samples, []
    ranks = _accelerators(graph)
    moe = workload.model.moe is not None and bool(workload.model.moe_layers()) and workload.parallelism.ep > 1
    reasons: list[str] = []
    if ranks >= LARGE_RUN_RANKS and moe:
        big = f"{ranks:,} ranks >= {LARGE_RUN_RANKS:,}"
        changed = False
        if options.lockstep is None:
            lockstep = changed = True
        if samples_opt is None and not options.routing_trace:
            samples, changed = 1, True
        if changed:
            reasons.append(f"{big} with expert parallelism")
    return lockstep, samples, reasons


def _members(coll: Collective) -> Iterator[Collective]:
    yield from coll.instances or (coll,)


def exact_flows(
    plan: StepPlan,
    graph: nx.DiGraph,
    cost: CostModel,
    algorithms: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> tuple[int, bool]:
    """Flows an exact replay of ``plan`` would simulate, and whether it has all-to-all(v)s.

    Transfers count one flow, an all-to-all(v) one per rank pair with bytes, other collectives
    the transfers of their exact plan under ``cost`` (built once per op, group size, size and
    server count).  With ``limit``, counting stops once the count exceeds it."""
    import numpy as np

    from netsim.collectives.registry import build_plan

    algorithms = algorithms or {}
    devices = plan.devices
    sizes: dict[tuple[Any, ...], int] = {}
    total = 0
    for coll in plan.collectives.values():
        for c in _members(coll):
            if c.op == "barrier":
                continue
            if c.op == "transfer":
                total += 1
            elif c.matrix is not None:
                total += int(np.count_nonzero(c.matrix))
            else:
                names = [devices[r] for r in c.ranks]
                servers = len({graph.nodes[d].get("node") for d in names})
                algo = c.algo or algorithms.get(c.op)
                key = (c.op, len(names), float(c.nbytes), servers, algo)
                if key not in sizes:
                    call = cost.call(c.op, names, c.nbytes, algo=algo)
                    sizes[key] = len(
                        build_plan(
                            c.op, names, c.nbytes, algo=call.algo, graph=graph, channels=call.channels, fluid=call.fluid
                        )
                    )
                total += sizes[key]
        if limit is not None and total > limit:
            break
    alltoall = any(c.op.startswith("all_to_all") for c in plan.collectives.values())
    return total, alltoall


def choose_model(
    options: ScenarioOptions,
    plan: StepPlan,
    graph: nx.DiGraph,
    cost: CostModel,
    lockstep: bool,
    routing_samples: int | None,
    reasons: list[str],
) -> Choice:
    """Step 2 of the rule (module doc): the collective model, with the plan options of step 1."""
    from netsim.collectives.models import Coflow, Exact, Stream

    requested = options.collective_model
    if requested != "auto":
        return Choice(requested, requested, lockstep, routing_samples, reasons=("set by the user",))
    flows, alltoall = exact_flows(plan, graph, cost, options.algorithms, limit=EXACT_FLOW_LIMIT)
    if flows <= EXACT_FLOW_LIMIT:
        model = Exact.name
        why = f"{flows:,} flows, at most {EXACT_FLOW_LIMIT:,}: every flow simulated"
    else:
        model = Coflow.name if alltoall or lockstep else Stream.name
        why = f"more than {EXACT_FLOW_LIMIT:,} flows exact"
        if lockstep and not alltoall:
            why += "; lockstep pipeline transfers as coflows"
    return Choice(requested, model, lockstep, routing_samples, flows, (why, *reasons))
