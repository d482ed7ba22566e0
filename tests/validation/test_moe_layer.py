"""moe-layer cases of `netsim validate`: the span of one MoE layer's ops, the predictor, the shipped source."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from netsim.cli import main
from netsim.errors import SpecError
from netsim.validation.moe_layer import layer_extras_ms, moe_layer_spans_ms, predict_moe_layer
from netsim.validation.runner import CASE_KINDS, run_validation, select_cases
from netsim.validation.sources import MoELayerCase, load_source, load_sources

SOURCE = """\
source:
  id: tiny-moe
  title: "t"
  url: https://example.org/x
  where: "table 1"
  kind: statement
system:
  topology: dgx-h100
  nodes: 1
  gpus_per_node: 8
cases:
  - id: tiny
    kind: moe-layer
    workload:
      name: tiny
      model: {layers: 1, hidden: 1024, ffn_hidden: 2048, heads: 8, vocab: 1024, seq_len: 1024, dtype: bf16,
              activation: swiglu, moe: {experts: 8, top_k: 2, capacity_factor: null, expert_ffn_hidden: 2048}}
      parallelism: {dp: 8, pp: 1, tp: 1, ep: 8, zero_stage: 1}
      micro_batch_size: 1
      num_microbatches: 1
      router: {name: uniform}
      storage: {enabled: false}
    measured_forward_ms: 1.0
    measured_backward_ms: 2.0
"""


def _ops(rows: list[tuple[int, str, int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["rank", "name", "layer", "start_s", "end_s"])


def test_the_span_runs_from_the_first_to_the_last_moe_op_of_each_pass() -> None:
    ops = _ops(
        [
            (0, "F.attn", 0, 0.0, 1.0),  # attention: before the span
            (0, "F.router", 0, 1.0, 1.1),
            (0, "host.fwd-dispatch-sync", 0, 1.1, 1.3),
            (0, "ep.fwd-dispatch", 0, 1.3, 1.5),
            (0, "F.experts", 0, 1.5, 3.0),
            (0, "ep.fwd-combine", 0, 3.0, 3.2),
            (0, "F.unpermute", 0, 3.2, 3.25),
            (0, "F.head", -1, 3.25, 3.5),  # another layer
            (0, "BW.unpermute", 0, 4.0, 4.1),
            (0, "ep.bwd-dispatch", 0, 4.1, 4.3),
            (0, "BW.experts", 0, 4.3, 7.0),
            (0, "ep.bwd-combine", 0, 7.0, 7.2),
            (0, "BW.router", 0, 7.2, 7.3),
            (0, "BW.attn", 0, 7.3, 9.0),
            (1, "F.experts", 0, 0.0, 100.0),  # another rank
        ]
    )
    fwd, bwd = moe_layer_spans_ms(ops)
    assert fwd == pytest.approx(2250.0) and bwd == pytest.approx(3300.0)


def test_the_transformer_layers_norm_and_residual_add_are_not_part_of_the_moe_layer() -> None:
    cols = ["op", "kernel", "pass", "time_s"]
    kernels = pd.DataFrame(
        [
            ("F.router", "rmsnorm", "fwd", 1e-3),  # the pre-MLP norm: the transformer layer's
            ("F.router", "router_linear", "fwd", 5e-3),
            ("F.unpermute", "residual", "fwd", 2e-3),  # the residual add closing the block
            ("F.unpermute", "residual (fp8 cast)", "fwd", 7e-3),  # an FP8 cast is the layer's own
            ("BW.router", "rmsnorm", "bwd", 3e-3),
            ("BW.router", "residual (fp32 router cast)", "fwd", 8e-3),  # the router's own backward casts
            ("BW.experts", "residual", "fwd", 6e-3),  # a gradient add timed as a residual: not the layer's
            ("BW.unpermute", "residual", "bwd", 4e-3),
            ("F.attn", "rmsnorm", "fwd", 9e-3),  # not an MoE op
        ],
        columns=cols,
    )
    fwd, bwd = layer_extras_ms(kernels)
    assert fwd == pytest.approx(3.0) and bwd == pytest.approx(7.0)


def test_a_layer_without_moe_ops_is_a_one_line_error() -> None:
    with pytest.raises(SpecError, match="no MoE op in its forward"):
        moe_layer_spans_ms(_ops([(0, "F.attn", 0, 0.0, 1.0), (0, "BW.experts", 0, 2.0, 3.0)]))


def test_the_predictor_times_the_layer_in_a_simulated_step(tmp_path: Path) -> None:
    p = tmp_path / "tiny-moe.yaml"
    p.write_text(SOURCE)
    src = load_source(p)
    case = src.cases[0]
    assert isinstance(case, MoELayerCase)
    fwd, bwd = list(predict_moe_layer(src, case))
    assert (fwd.metric, bwd.metric) == ("forward_ms", "backward_ms")
    assert (fwd.measured, bwd.measured) == (1.0, 2.0)
    # the layer is a part of the step, and its backward (two GEMMs per weight) is the longer pass
    step_ms = fwd.detail["step_time_s"] * 1e3 if fwd.detail else 0.0
    assert 0 < fwd.predicted < bwd.predicted < step_ms
    row = run_validation([src]).table
    assert set(row["metric"]) == {"forward_ms", "backward_ms"} and set(row["kind"]) == {"moe-layer"}


def test_moe_layer_is_a_case_kind_of_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "moe-layer" in CASE_KINDS
    p = tmp_path / "tiny-moe.yaml"
    p.write_text(SOURCE)
    with pytest.raises(SystemExit):  # far from the made-up numbers: exit 1, every line printed
        main(["validate", "--source", str(p), "--kind", "moe-layer", "--out", str(tmp_path / "v")])
    out = capsys.readouterr().out
    assert "moe-layer tiny-moe/tiny forward: measured 1 ms" in out and "moe-layer tiny-moe/tiny backward" in out
    assert "## MoE layers" in (tmp_path / "v" / "report.md").read_text()


def test_a_moe_layer_case_needs_both_times(tmp_path: Path) -> None:
    p = tmp_path / "tiny-moe.yaml"
    p.write_text(SOURCE.replace("    measured_backward_ms: 2.0\n", ""))
    with pytest.raises(SpecError) as info:
        load_source(p)
    assert "measured_backward_ms" in str(info.value) and "\n" not in str(info.value)


def test_the_shipped_moe_perf_source_names_every_case_of_the_test() -> None:
    (src,) = [s for s in load_sources() if s.source.id == "megatron-lm-moe-perf-h100"]
    ids = {c.id for c in src.cases}
    assert ids == {
        f"{m}-{d}-tp1ep8-{t}"
        for m in ("mixtral", "deepseek")
        for d in ("a2a", "deepep", "hybridep")
        for t in ("bf16", "fp8")
    }
    assert src.system.set["accelerator.compute.clock_mhz"] == 1980
    # what the test builds: a bare TransformerConfig's GELU MLP experts (not gated, unfused), no shared expert
    for c in src.cases:
        assert isinstance(c, MoELayerCase) and isinstance(c.workload, dict)
        model, training = c.workload["model"], c.workload["training"]
        assert model["activation"] == "gelu" and training["activation_fusion"] is False
        assert not model["moe"].get("shared_experts")
        assert model["moe"]["router_dtype"] == "fp32"  # the test's moe_router_dtype
    quick = {c.id for _, c in select_cases([src], quick=True)}
    # the cases within 10% in both passes run in CI's --quick (and assert it)
    assert quick == {
        "mixtral-deepep-tp1ep8-bf16",
        "deepseek-a2a-tp1ep8-bf16",
        "deepseek-deepep-tp1ep8-bf16",
        "deepseek-deepep-tp1ep8-fp8",
        "deepseek-hybridep-tp1ep8-bf16",
    }
