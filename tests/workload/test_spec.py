"""Workload and scenario specs: presets load, bad input is one clear SpecError/WorkloadError."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.config.scenario import DEFAULT_SCENARIO_PATH, load_scenario, split_overrides
from netsim.config.workload import WORKLOAD_PRESET_DIR, list_workload_presets, load_workload
from netsim.errors import SpecError, WorkloadError
from netsim.topology import load_topology
from netsim.workload.layout import build_layout

REPO = Path(__file__).resolve().parents[2]


def test_presets_are_shipped_in_the_package_and_linked_from_the_repo() -> None:
    assert {"locmoe-pangu", "mixtral-8x7b", "deepseek-v3", "gpt-dense"} <= set(list_workload_presets())
    link = REPO / "workloads"
    assert link.is_symlink() and link.resolve() == WORKLOAD_PRESET_DIR.resolve()


@pytest.mark.parametrize("name", ["locmoe-pangu", "mixtral-8x7b", "deepseek-v3", "gpt-dense"])
def test_every_preset_validates_and_cites_its_sources(name: str) -> None:
    spec = load_workload(name)
    assert spec.name == name
    text = (WORKLOAD_PRESET_DIR / f"{name}.yaml").read_text()
    assert "Source" in text and "arXiv" in text


def test_the_fsdp_preset_is_the_validated_llm_foundry_run() -> None:
    """mpt-7b-fsdp is llm-foundry's 7B configuration that netsim validate predicts, field for field
    (all but the data-parallel size, which the cluster sets, and the global batch, which it implies)."""
    from netsim.validation.sources import load_sources

    src = next(s for s in load_sources() if s.source.id == "llm-foundry-mpt-h100")
    case = next(c for c in src.cases if c.id == "mpt-7b-128gpus")
    published = load_workload(case.workload)
    preset = load_workload("mpt-7b-fsdp")
    assert preset.training.framework == "pytorch"
    for part in ("model", "training", "optimizer", "overlap"):
        assert getattr(preset, part) == getattr(published, part), part
    assert preset.micro_batch_size == published.micro_batch_size == 6
    assert preset.parallelism.zero_stage == published.parallelism.zero_stage == 3
    assert "5e85bd62d" in (WORKLOAD_PRESET_DIR / "mpt-7b-fsdp.yaml").read_text()


@pytest.mark.parametrize(
    ("preset_name", "case_id"), [("llama2-70b-fsdp", "llama70b-eager"), ("llama2-7b-hsdp", "llama7b-eager")]
)
def test_the_llama_fsdp_presets_are_ibms_validated_eager_rows(preset_name: str, case_id: str) -> None:
    """llama2-70b-fsdp and llama2-7b-hsdp are fms-fsdp's eager rows that netsim validate predicts,
    field for field (all but the data-parallel size, which the cluster sets)."""
    from netsim.validation.sources import load_sources

    src = next(s for s in load_sources() if s.source.id == "ibm-fms-fsdp-a100")
    published = load_workload(next(c for c in src.cases if c.id == case_id).workload)
    preset = load_workload(preset_name)
    assert preset.training.eager_modules == ["norm", "rope"] and preset.optimizer.implementation == "foreach"
    for part in ("model", "training", "optimizer", "overlap"):
        assert getattr(preset, part) == getattr(published, part), part
    assert preset.micro_batch_size == published.micro_batch_size == 2
    assert preset.parallelism.zero_stage == published.parallelism.zero_stage == 3
    assert preset.parallelism.dp_replicas == published.parallelism.dp_replicas
    assert "5e522b4" in (WORKLOAD_PRESET_DIR / f"{preset_name}.yaml").read_text()


def test_preset_facts() -> None:
    mix = load_workload("mixtral-8x7b").model
    assert (mix.layers, mix.hidden, mix.ffn_hidden, mix.heads, mix.num_kv_heads, mix.vocab) == (
        32,
        4096,
        14336,
        32,
        8,
        32000,
    )
    assert mix.moe is not None and (mix.moe.experts, mix.moe.top_k) == (8, 2)
    ds = load_workload("deepseek-v3")
    m = ds.model
    assert m.moe is not None
    assert (m.layers, m.hidden, m.moe.first_dense, m.moe.expert_ffn_hidden) == (61, 7168, 3, 2048)
    assert (m.moe.experts, m.moe.shared_experts, m.moe.top_k) == (256, 1, 8)
    # 58 MoE layers and the multi-token-prediction block (layer 61, an MoE layer: report 2.2)
    assert m.mtp_depth == 1 and m.mtp_layers() == [61]
    assert len(m.moe_layers()) == 59 and m.moe_layers()[0] == 3 and m.moe_layers()[-1] == 61
    assert (ds.parallelism.ep, ds.parallelism.pp, ds.schedule.name) == (64, 16, "dualpipe")
    loc = load_workload("locmoe-pangu")
    assert loc.model.moe is not None and len(loc.model.moe_layers()) == 8
    assert (loc.model.moe.experts, loc.model.moe.top_k, loc.parallelism.ep, loc.parallelism.tp) == (16, 1, 16, 8)
    # LocMoE's "batch size 32" is MindSpore's per-data-parallel batch (per_batch_size)
    assert (loc.model.heads, loc.micro_batch_size, loc.num_microbatches, loc.global_batch_size) == (40, 32, 1, None)
    assert (loc.training.recompute, loc.param_dtype, loc.parallelism.zero_stage) == ("full", "fp32", 3)
    assert ds.model.dtype == "fp8" and ds.model.bpe == 2


def test_moe_layer_selection() -> None:
    base = {"layers": 6, "hidden": 64, "ffn_hidden": 128, "heads": 4, "vocab": 10, "seq_len": 8}
    every2 = load_workload({"model": {**base, "moe": {"experts": 4, "top_k": 1, "every_n": 2}}}).model
    assert every2.moe_layers() == [1, 3, 5]
    listed = load_workload({"model": {**base, "moe": {"experts": 4, "top_k": 1, "layers": [0, 4]}}}).model
    assert listed.moe_layers() == [0, 4]


def test_unknown_field_names_the_field_and_the_allowed_keys(tmp_path: Path) -> None:
    f = tmp_path / "w.yaml"
    f.write_text("model: {layers: 2, hidden: 8, ffn_hidden: 8, heads: 2, vocab: 8, seq_len: 8}\nschedul: 1f1b\n")
    with pytest.raises(SpecError) as exc:
        load_workload(f)
    line = exc.value.one_line()
    assert str(f) in line and "schedul" in line and "schedule" in line and "\n" not in line


def test_bad_values_are_reported_with_their_field() -> None:
    model = {"layers": 2, "hidden": 8, "ffn_hidden": 8, "heads": 2, "vocab": 8, "seq_len": 8}
    with pytest.raises(SpecError, match=r"model.moe"):
        load_workload({"model": {**model, "moe": {"experts": 2, "top_k": 3}}}, source="x")
    with pytest.raises(SpecError, match="grad_bucket_bytes"):
        load_workload({"model": model, "grad_bucket_bytes": "12 parsecs"}, source="x")
    with pytest.raises(SpecError, match=r"parallelism.zero_stage"):
        load_workload({"model": model}, ["parallelism.zero_stage=5"], source="x")


def test_ep_that_does_not_divide_the_stage_is_a_workload_error() -> None:
    graph = load_topology("dgx-h100", nodes=1)
    spec = load_workload("mixtral-8x7b", ["parallelism.pp=1", "parallelism.ep=3"])
    with pytest.raises(WorkloadError) as exc:
        build_layout(spec, graph)
    assert exc.value.field == "parallelism.ep"
    assert "allowed: 1, 2, 4, 8" in exc.value.one_line()


def test_parallel_sizes_must_fit_the_devices() -> None:
    graph = load_topology("dgx-h100", nodes=1)
    with pytest.raises(WorkloadError, match="pp \\* tp"):
        build_layout(load_workload("gpt-dense", ["parallelism.tp=3"]), graph)
    with pytest.raises(WorkloadError, match="only 8 accelerators"):
        build_layout(load_workload("gpt-dense", ["parallelism.dp=3"]), graph)


def test_default_scenario_and_override_routing() -> None:
    scen = load_scenario(None, ["seed=7", "topology.backend.oversubscription=2", "workload.steps=3"])
    assert scen.name == "default" and scen.seed == 7
    assert scen.topology_overrides[-1] == "backend.oversubscription=2"
    assert scen.workload_overrides[-1] == "steps=3"
    assert DEFAULT_SCENARIO_PATH.is_file()
    assert split_overrides(["a=1", "topology.x=2", "workload.y=3"]) == (["a=1"], ["x=2"], ["y=3"])
    with pytest.raises(SpecError, match=r"options.flops_efficiency"):
        load_scenario(None, ["options.flops_efficiency=1.5"])


def test_scenario_paths_are_relative_to_the_scenario_file(tmp_path: Path) -> None:
    from netsim.run import load_scenario_workload

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.yaml").write_text(
        "name: mine\nmodel: {layers: 2, hidden: 8, ffn_hidden: 8, heads: 2, vocab: 8, seq_len: 8}\n"
    )
    scen = tmp_path / "sub" / "s.yaml"
    scen.write_text("name: s\ntopology: dgx-h100\nworkload: w.yaml\nworkload_overrides: [steps=2]\n")
    spec = load_scenario(scen)
    work = load_scenario_workload(spec)
    assert work.name == "mine" and work.steps == 2
    assert work.source == str(tmp_path / "sub" / "w.yaml")


def test_squared_relu_is_a_non_gated_mlp_timed_as_the_gelu_kernel() -> None:
    from netsim.workload.costs import ModelCosts

    model = {"layers": 2, "hidden": 256, "ffn_hidden": 1024, "heads": 4, "vocab": 1000, "seq_len": 128}
    relu2 = load_workload({"model": {**model, "activation": "squared_relu"}}, source="t")
    gelu = load_workload({"model": {**model, "activation": "gelu"}}, source="t")
    a, b = ModelCosts(relu2.model, 1, 1), ModelCosts(gelu.model, 1, 1)
    assert [(c.kernel, c.shape) for c in a.mlp("F")] == [(c.kernel, c.shape) for c in b.mlp("F")]
    assert "gelu" in {c.kernel for c in a.mlp("F")} and a.layer_params(0) == b.layer_params(0)
    with pytest.raises(SpecError, match=r"model\.activation"):
        load_workload({"model": {**model, "activation": "relu"}}, source="t")
