"""Plan signatures: a canonical dump of the op graphs and replayed step times of small scenarios.

A refactor of the workload builder (:mod:`netsim.workload`) must not change what it plans.  This
script builds the plans of a fixed set of small scenarios (the built-in one, the presets scaled
to 2-4 servers, DualPipe, lockstep on and off, ZeRO 0/1/3, checkpoints) and writes, per
scenario, every op (id, rank, step, kind, stream, name, class, layer, micro-batch, deps,
duration, lane durations, lane, ordering, collective, issue order, background flag) and every
collective (key, op, members, bytes, matrix, endpoints, instances), then replays it and records
the step times, the breakdown and the bytes by class.

    python benchmarks/plan_signature.py --out /tmp/sig-before      # before the change
    python benchmarks/plan_signature.py --out /tmp/sig-after       # after it
    python benchmarks/plan_signature.py --compare /tmp/sig-before /tmp/sig-after

``--only NAME`` restricts to some scenarios; ``--no-replay`` skips the replays.  Floats are
written with ``repr`` (exact): two signatures are equal only if the plans are identical.  Not a
test: the step times change whenever the compute or collective models do (on purpose).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: scenario name -> ``--set`` overrides of the built-in scenario
_DS = [
    "topology=h800",
    "nodes=4",
    "workload=deepseek-v3",
    "workload.parallelism.pp=2",
    "workload.parallelism.pipeline_layers=null",
    "workload.parallelism.ep=16",
    "workload.model.layers=4",
    "workload.model.moe.first_dense=1",
    "workload.num_microbatches=4",
    "workload.router.name=uniform",
    "workload.router.options={}",
]
_MIX = [
    "topology=dgx-h100",
    "nodes=4",
    "workload=mixtral-8x7b",
    "workload.model.layers=4",
    "workload.num_microbatches=4",
]
_GPT = ["topology=dgx-h100", "nodes=2", "workload=gpt-dense", "workload.model.layers=4", "workload.num_microbatches=4"]
_LOC = [
    "topology=ascend-910a",
    "nodes=2",
    "workload=locmoe-pangu",
    "workload.model.layers=4",
    "workload.model.moe.first_dense=2",
    "workload.global_batch_size=4",
]
SCENARIOS: dict[str, list[str]] = {
    "default": [],
    "default-lockstep": ["options.lockstep=true"],
    "default-zero3-ckpt": ["workload.parallelism.zero_stage=3", "workload.checkpoint.every_steps=1", "steps=2"],
    "default-zero0-nooverlap": [
        "workload.parallelism.zero_stage=0",
        "workload.overlap.dp_overlap_backward=false",
        "workload.overlap.ep_overlap_slices=2",
    ],
    "default-ckpt-sync-backend": [
        "workload.checkpoint.every_steps=1",
        "workload.checkpoint.asynchronous=false",
        "workload.checkpoint.target=backend",
        "topology.backend.storage.bandwidth=400Gbps",
        "options.lockstep=true",
    ],
    "default-gpipe-nosp": ["workload.schedule.name=gpipe", "workload.parallelism.sequence_parallel=false"],
    "default-interleaved": [
        "workload.schedule.name=interleaved-1f1b",
        "workload.schedule.virtual_chunks=2",
        "workload.model.layers=8",
    ],
    "mixtral": _MIX,
    "mixtral-lockstep-zero3": [*_MIX, "options.lockstep=true", "workload.parallelism.zero_stage=3"],
    "gpt-dense": [*_GPT, "options.collective_model=stream"],
    "gpt-dense-lockstep": [*_GPT, "options.collective_model=stream", "options.lockstep=true"],
    "locmoe": [*_LOC, "options.collective_model=stream"],
    "locmoe-lockstep": [*_LOC, "options.collective_model=stream", "options.lockstep=true"],
    "deepseek-dualpipe": [*_DS, "options.collective_model=coflow"],
    "deepseek-dualpipe-lockstep": [
        *_DS,
        "options.collective_model=coflow",
        "options.lockstep=true",
        "workload.checkpoint.every_steps=1",
    ],
}


def _f(x: float) -> str:
    return repr(float(x))


def _arr(a: np.ndarray | None) -> str:
    if a is None:
        return "-"
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()[:16]


def _coll(c: Any) -> str:
    inst = ";".join(_coll(i) for i in c.instances) if c.instances else ""
    return (
        f"{c.key!r}|{c.op}|{c.ranks}|{_f(c.nbytes)}|{c.traffic_class}|{c.label}|{_arr(c.matrix)}|{c.src}|"
        f"{c.dst}|{c.phase}|{c.layer}|{c.microbatch}|{c.step}|{c.slice}|{_f(c.local_bytes)}|{c.network}|[{inst}]"
    )


def plan_lines(plan: Any) -> list[str]:
    """The canonical text of a plan (one line per op and per collective)."""
    out = [
        f"layout {plan.layout.world} {plan.layout.dp} {plan.layout.pp} {plan.layout.tp} {plan.layout.ep} "
        f"{plan.layout.devices}",
        f"schedule {plan.schedule.name} {plan.schedule.m} blocks {plan.layers_of_block}",
        f"steps {plan.steps} checkpoints {plan.checkpoint_steps} rep_of {plan.rep_of}",
        f"params {[_f(x) for x in plan.params_per_rank]}",
        f"expert_params {[_f(x) for x in plan.expert_params_per_rank]}",
        f"ep_bytes {sorted((k, _f(v)) for k, v in plan.ep_bytes.items())}",
        f"expert_load {hashlib.sha256(repr(plan.expert_load).encode()).hexdigest()[:16]}",
        f"compute_cache {plan.compute_cache_size}",
    ]
    for o in plan.ops:
        out.append(
            f"op {o.id} r{o.rank} s{o.step} {o.kind} {o.stream} {o.name} {o.traffic_class} L{o.layer} "
            f"mb{o.microbatch} deps{o.deps} d={_f(o.duration_s)} lanes={_arr(o.lane_durations_s)} "
            f"lane{o.lane} ord{int(o.ordered)} issue{o.issue} bg{int(o.background)} "
            f"coll={o.coll.key if o.coll is not None else '-'!r}"
        )
    for key, c in plan.collectives.items():
        out.append(f"coll {key!r} {_coll(c)}")
    return out


def signature(name: str, overrides: list[str], replay: bool) -> dict[str, Any]:
    from netsim.config.scenario import load_scenario
    from netsim.run import prepare, simulate, summarize_replay

    prep = prepare(load_scenario(None, overrides))
    lines = plan_lines(prep.plan)
    text = "\n".join(lines) + "\n"
    rec: dict[str, Any] = {
        "name": name,
        "overrides": overrides,
        "num_ops": len(prep.plan.ops),
        "num_collectives": len(prep.plan.collectives),
        "plan_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    if replay:
        res, net = simulate(prep)
        summary, _ = summarize_replay(prep, res, net)
        rec["step_times_s"] = [_f(x) for x in res.step_times_s]
        rec["breakdown_s"] = {k: _f(v) for k, v in summary["breakdown_s"].items()}
        rec["bytes_by_class"] = {k: _f(v) for k, v in summary["bytes_by_class"].items()}
        rec["op_end_sha256"] = hashlib.sha256(np.asarray(res.op_end, dtype=np.float64).tobytes()).hexdigest()
    rec["_text"] = text
    return rec


def write(out: Path, only: list[str], replay: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {}
    for name, over in SCENARIOS.items():
        if only and name not in only:
            continue
        rec = signature(name, over, replay)
        (out / f"{name}.plan.txt").write_text(rec.pop("_text"))
        index[name] = rec
        print(f"{name}: {rec['num_ops']} ops, step {rec.get('step_times_s')}", flush=True)
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def compare(a: Path, b: Path) -> int:
    ia = json.loads((a / "index.json").read_text())
    ib = json.loads((b / "index.json").read_text())
    bad = 0
    for name in sorted(set(ia) & set(ib)):
        if ia[name] == ib[name]:
            print(f"{name}: identical")
            continue
        bad += 1
        diff = [k for k in sorted(set(ia[name]) | set(ib[name])) if ia[name].get(k) != ib[name].get(k)]
        print(f"{name}: DIFFERS in {', '.join(diff)}")
    missing = sorted(set(ia) ^ set(ib))
    if missing:
        print(f"only in one of them: {', '.join(missing)}")
    return 1 if bad else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", type=Path, nargs=2)
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--no-replay", action="store_true")
    args = ap.parse_args()
    if args.compare:
        sys.exit(compare(*args.compare))
    if args.out is None:
        ap.error("--out or --compare")
    write(args.out, args.only, not args.no_replay)


if __name__ == "__main__":
    main()
