"""Training cases of `netsim validate`: FLOP conventions by hand, the predictor, bad input."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from netsim.cli import main
from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.run import prepare, simulate
from netsim.validation.runner import run_validation, select_cases
from netsim.validation.sources import TrainingCase, load_source, load_sources
from netsim.validation.training import FLOP_CONVENTIONS, metric_value, predict_training, scenario_of, simulate_case

GPT = {
    "name": "g",
    "model": {
        "layers": 4,
        "hidden": 1024,
        "ffn_hidden": 4096,
        "heads": 16,
        "vocab": 8192,
        "seq_len": 512,
        "dtype": "bf16",
        "activation": "gelu",
    },
}

SOURCE = """\
source:
  id: {id}
  title: "t"
  url: https://example.org/x
  where: "table 1"
  kind: paper
system:
  topology: dgx-h100
  nodes: 1
  gpus_per_node: 8
cases:
  - id: tiny
    kind: training
    workload:
      name: tiny
      model: {{layers: 4, hidden: 1024, ffn_hidden: 4096, heads: 16, vocab: 8192, seq_len: 512, dtype: bf16,
              activation: gelu}}
      parallelism: {{pp: 2, tp: 2, ep: 1, zero_stage: 1}}
      micro_batch_size: 1
      num_microbatches: 4
      storage: {{enabled: false}}
    metric: {metric}
    flops: megatron
    measured: {measured}
"""


def write_source(
    tmp_path: Path, name: str = "tiny-run", metric: str = "tflops_per_gpu", measured: str = "300", **repl: str
) -> Path:
    text = SOURCE.format(id=name, metric=metric, measured=measured)
    for a, b in repl.items():
        text = text.replace(a, b)
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------- FLOPs


def test_flop_conventions_by_hand() -> None:
    spec = load_workload(GPT)
    B, s, L, h, V = 3.0, 512, 4, 1024, 8192
    # Narayanan et al. eq. (3), full recomputation
    assert FLOP_CONVENTIONS.get("megatron-2021")(spec, B) == pytest.approx(
        96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
    )
    # Megatron's code for a dense GPT: 72 B s l h^2 (1 + s/6h + V/12lh)
    assert FLOP_CONVENTIONS.get("megatron")(spec, B) == pytest.approx(
        72 * B * s * L * h * h * (1 + s / (6 * h) + V / (12 * L * h))
    )
    # PaLM: 6 N + 12 L H Q T per token, N = 12 L h^2 (attention 4h^2 + MLP 8h^2) + h V (the head)
    n = 12 * L * h * h + h * V
    assert FLOP_CONVENTIONS.get("palm")(spec, B) == pytest.approx(B * s * (6 * n + 12 * L * h * s))


def test_megatron_bridge_flops_by_hand() -> None:
    """Megatron-Bridge's transformer_flops (flop_utils.py at dc7018784b), written out for a GQA
    SwiGLU model: 6 x (attention projections + q s causal core + 3 h f MLP) per layer and token, plus
    6 h V_padded for the logits, the vocabulary padded to a multiple of 128 x TP."""
    L, h, f, s, V, heads, kv, tp = 4, 1024, 2816, 512, 8000, 16, 4, 2
    spec = load_workload(
        {
            **GPT,
            "model": {**GPT["model"], "activation": "swiglu", "kv_heads": kv, "ffn_hidden": f, "vocab": V},
            "parallelism": {"tp": tp},
        }
    )
    q, kvp = h, h // heads * kv
    per_layer = h * (q + 2 * kvp) + q * h + q * s + 3 * h * f
    padded = 8192  # 8000 up to a multiple of 128 x 2 = 256
    B = 3.0
    want = 6 * B * s * (L * per_layer + h * padded)
    assert FLOP_CONVENTIONS.get("megatron-bridge")(spec, B) == pytest.approx(want, rel=1e-12)
    # the same model by Megatron-LM's count: twice the attention core, the unpadded vocabulary
    assert FLOP_CONVENTIONS.get("megatron")(spec, B) == pytest.approx(
        want + 6 * B * s * (L * q * s - h * (padded - V)), rel=1e-12
    )
    # and by its count since March 2025 (8873b55d6a): the causal core, the vocabulary as given
    causal = FLOP_CONVENTIONS.get("megatron-2025")(spec, B)
    assert causal == pytest.approx(want - 6 * B * s * h * (padded - V), rel=1e-12)


def test_megatron_and_palm_count_the_same_matmuls() -> None:
    """Both conventions count every weight GEMM three times and the full s x s attention: equal on a
    GQA SwiGLU model, and on an MoE model (top-k experts per token)."""
    llama = load_workload({**GPT, "model": {**GPT["model"], "activation": "swiglu", "kv_heads": 4, "ffn_hidden": 2816}})
    moe = load_workload(
        {
            **GPT,
            "model": {
                **GPT["model"],
                "activation": "swiglu",
                "kv_heads": 4,
                "ffn_hidden": 2816,
                "moe": {"experts": 8, "top_k": 2},
            },
        }
    )
    for spec in (llama, moe):
        a, b = FLOP_CONVENTIONS.get("megatron")(spec, 5.0), FLOP_CONVENTIONS.get("palm")(spec, 5.0)
        # PaLM also counts the router GEMM (h x experts); Megatron's formula leaves it out
        router = 6 * 5 * 512 * 4 * 1024 * 8 if spec.model.moe else 0.0
        assert a == pytest.approx(b - router, rel=1e-12)


def test_megatron_2021_is_for_dense_gpts_only() -> None:
    swiglu = load_workload({**GPT, "model": {**GPT["model"], "activation": "swiglu"}})
    with pytest.raises(SpecError, match="dense GPT"):
        FLOP_CONVENTIONS.get("megatron-2021")(swiglu, 1.0)


def test_the_schema_lists_every_flop_convention() -> None:
    field = TrainingCase.model_fields["flops"].annotation
    allowed = {a for arg in typing.get_args(field) for a in typing.get_args(arg)}
    assert allowed == set(FLOP_CONVENTIONS.names())


# ---------------------------------------------------------------------------------------- predictor


def test_the_prediction_is_netsim_run_of_the_same_scenario(tmp_path: Path) -> None:
    src = load_source(write_source(tmp_path))
    case = src.cases[0]
    assert isinstance(case, TrainingCase)
    (p,) = list(predict_training(src, case))
    prep = prepare(scenario_of(src, case))
    res, _ = simulate(prep)
    step = res.step_times_s[0]
    # 8 GPUs: DP 2 x PP 2 x TP 2, 4 micro-batches of 1 x 512 tokens per replica
    flops = FLOP_CONVENTIONS.get("megatron")(prep.workload, 8.0)
    assert p.predicted == pytest.approx(flops / step / 8 / 1e12)
    assert p.detail is not None and p.detail["step_time_s"] == pytest.approx(step)
    assert p.measured == 300 and not p.lower_is_better
    shares = sum(p.detail[k] for k in ("compute_share", "communication_share", "overlap_share", "idle_share"))
    assert shares == pytest.approx(1.0)


def test_metrics_from_one_step(tmp_path: Path) -> None:
    src = load_source(write_source(tmp_path))
    case = src.cases[0]
    assert isinstance(case, TrainingCase)
    r = simulate_case(src, case)
    tokens = 2 * 4 * 512
    assert r.tokens == tokens and r.gpus == 8
    as_tokens = case.model_copy(update={"metric": "tokens_per_s_per_gpu"})
    assert metric_value(as_tokens, r) == pytest.approx(tokens / r.step_time_s / 8)
    as_mfu = case.model_copy(update={"metric": "mfu"})
    assert metric_value(as_mfu, r) == pytest.approx(metric_value(case, r) * 1e12 / 989e12)
    as_step = case.model_copy(update={"metric": "step_time_s"})
    assert metric_value(as_step, r) == r.step_time_s


@pytest.mark.parametrize(
    ("repl", "field", "words"),
    [
        ({"    flops: megatron\n": ""}, "cases.0", "needs flops"),
        ({"flops: megatron": "flops: marketing"}, "cases.0.flops", "megatron-2021"),
        ({"metric: tflops_per_gpu": "metric: mfu", "measured: 300": "measured: 41"}, "cases.0", "fraction of peak"),
        ({"metric: tflops_per_gpu": "metric: joy"}, "cases.0.metric", "tokens_per_s_per_gpu"),
    ],
)
def test_malformed_training_cases_are_one_line_errors(
    tmp_path: Path, repl: dict[str, str], field: str, words: str
) -> None:
    p = write_source(tmp_path, **repl)
    with pytest.raises(SpecError) as info:
        load_source(p)
    msg = str(info.value)
    assert str(p) in msg and field in msg and words in msg and "\n" not in msg


def test_a_layout_that_does_not_match_the_gpus_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DP 1 x PP 2 x TP 2 = 4 ranks on 8 GPUs
    p = write_source(tmp_path, **{"zero_stage: 1}": "zero_stage: 1, dp: 1}"})
    with pytest.raises(SystemExit) as info:
        main(["validate", "--source", str(p)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "4 ranks" in err and "8 GPUs" in err and "cases.tiny.workload" in err


def test_a_run_on_part_of_a_server_names_its_gpus_per_node(tmp_path: Path) -> None:
    """A case on 4 of a DGX's 8 GPUs (NeMo's 4K long-sequence row): its layout names dp, the
    case its gpus_per_node, and the per-GPU metric and the result row count 4 GPUs."""
    p = write_source(
        tmp_path,
        **{
            "zero_stage: 1}": "zero_stage: 1, dp: 1}",
            "  - id: tiny\n    kind: training\n": "  - id: tiny\n    kind: training\n    gpus_per_node: 4\n",
        },
    )
    src = load_source(p)
    case = src.cases[0]
    assert isinstance(case, TrainingCase) and case.gpus_per_node == 4
    r = simulate_case(src, case)
    assert r.gpus == 4
    assert metric_value(case.model_copy(update={"metric": "tokens_per_s_per_gpu"}), r) == pytest.approx(
        r.tokens / r.step_time_s / 4
    )
    (row,) = run_validation([src]).table.to_dict("records")
    assert row["nodes"] * row["gpus_per_node"] == 4


def test_a_case_cannot_use_more_gpus_per_node_than_its_servers_have(tmp_path: Path) -> None:
    p = write_source(
        tmp_path, **{"  - id: tiny\n    kind: training\n": "  - id: tiny\n    kind: training\n    gpus_per_node: 16\n"}
    )
    with pytest.raises(SpecError) as info:
        load_source(p)
    msg = str(info.value)
    assert str(p) in msg and "gpus_per_node 16" in msg and "system's 8" in msg and "\n" not in msg


def test_cli_prints_the_training_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_source(tmp_path, measured="1")  # far from any prediction: exit 1, and the line says so
    with pytest.raises(SystemExit) as info:
        main(["validate", "--source", str(p), "--out", str(tmp_path / "v")])
    out = capsys.readouterr().out
    assert info.value.code == 1
    assert "training tiny-run/tiny: tflops_per_gpu measured 1" in out and "FAIL tiny-run/tiny" in out
    report = (tmp_path / "v" / "report.md").read_text()
    assert "## Training runs" in report and "tflops_per_gpu (megatron)" in report


# ---------------------------------------------------------------------------------------- shipped data


def test_shipped_training_sources_cite_where_every_number_is() -> None:
    sources = [s for s in load_sources() if any(isinstance(c, TrainingCase) for c in s.cases)]
    assert {s.source.id for s in sources} >= {
        "narayanan-2021-table1",
        "korthikanti-2022",
        "llama3-405b",
        "deepseek-v3",
        "megatron-core-mixtral-8x7b",
        "megatron-bridge-h100",
    }
    for s in sources:
        for c in s.cases:
            assert isinstance(c, TrainingCase)
            assert c.where or s.source.where, (s.source.id, c.id)
            assert c.metric in ("tokens_per_s_per_gpu", "step_time_s") or c.flops is not None


def test_quick_selection_keeps_the_expensive_runs_out() -> None:
    quick = select_cases(load_sources(), quick=True, kinds=["training"])
    assert quick and all(isinstance(c, TrainingCase) and c.quick for _, c in quick)
    assert all((c.nodes or s.system.nodes) <= 16 for s, c in quick)


def test_a_case_with_its_peak_memory_gives_a_memory_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_source(tmp_path, **{"    measured: 300\n": "    measured: 300\n    peak_memory_gib: 1.0\n"})
    src = load_source(p)
    case = src.cases[0]
    assert isinstance(case, TrainingCase)
    step, memory = list(predict_training(src, case))
    prep = prepare(scenario_of(src, case))
    assert prep.plan.memory is not None
    assert memory.metric == "peak_memory_gib" and memory.measured == 1.0
    assert memory.predicted == pytest.approx(prep.plan.memory.peak.total / 2**30) and memory.lower_is_better
    assert step.metric == "tflops_per_gpu"
    with pytest.raises(SystemExit):
        main(["validate", "--source", str(p), "--out", str(tmp_path / "v")])
    out = capsys.readouterr().out
    assert "training tiny-run/tiny: peak_memory_gib measured 1, predicted" in out and "memory tally" in out
    report = (tmp_path / "v" / "report.md").read_text()
    assert "| peak_memory_gib | 1 |" in report
