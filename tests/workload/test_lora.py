"""LoRA fine-tuning (``training.lora``) and packed documents (``training.document_tokens``):
frozen base weights lose their weight gradients, the adapters' GEMMs and parameters are the only
ones trained, and a packed document's attention is causal over the document (hand-computed)."""

from __future__ import annotations

from typing import Any

import pytest

from netsim.config.workload import load_workload
from netsim.errors import SpecError
from netsim.workload.costs import ModelCosts
from netsim.workload.fp8 import FP8_RECIPES, quant_bytes
from netsim.workload.graph import build_plan
from netsim.workload.kernel_calls import split

from ..replay.helpers import FixedCompute, chain_topology

H, FFN, HEADS, KV, S = 1024, 4096, 16, 4, 2048
MODEL: dict[str, Any] = {
    "layers": 4,
    "hidden": H,
    "ffn_hidden": FFN,
    "heads": HEADS,
    "kv_heads": KV,
    "vocab": 1000,
    "seq_len": S,
    "activation": "swiglu",
}


def _spec(**training: Any) -> Any:
    data = {
        "model": MODEL,
        "parallelism": {"pp": 1, "tp": 1, "dp": 2, "zero_stage": 1},
        "num_microbatches": 2,
        "training": training,
        "storage": {"enabled": False},
    }
    return load_workload(data, source="lora.yaml")


def _costs(tp: int = 1, **training: Any) -> ModelCosts:
    spec = _spec(**training)
    t = spec.training
    return ModelCosts(
        spec.model, 1, tp, flash_attention=t.flash_attention, lora=t.lora, document_tokens=t.document_tokens
    )


class _Bytes:
    """A kernel's time = the bytes it moves (the residual kernel: 6 per element in BF16)."""

    name = "bytes"

    def time(self, kernel: str, pass_: str = "fwd", *, dtype: str | None = None, **shape: float) -> float:
        assert kernel == "residual"
        return 6.0 * shape["tokens"] * shape["hidden"]


def _gemms(calls: list[Any]) -> list[tuple[float, bool]]:
    """(time scale, adapter) of every GEMM call."""
    return [(c.scale, c.adapter) for c in calls if c.kernel == "gemm"]


def test_frozen_gemms_keep_only_their_input_gradient() -> None:
    full, lora = _costs(), _costs(lora={"rank": 8, "targets": ["linear_qkv"]})
    # forward: the base GEMMs (QKV, out) plus the two adapter GEMMs after QKV
    assert [a for _, a in _gemms(lora.attention("F"))] == [False, True, True, False]
    assert [a for _, a in _gemms(full.attention("F"))] == [False, False]
    # backward: a trained GEMM's backward is its input and weight gradient (scale 1), a frozen one
    # its input gradient only (0.5); the adapters are trained
    assert _gemms(full.attention("BW")) == [(1.0, False), (1.0, False)]
    assert _gemms(lora.attention("BW")) == [(0.5, False), (1.0, True), (1.0, True), (0.5, False)]
    # the deferred weight-gradient part keeps only the adapters
    assert _gemms(lora.attention("W")) == [(0.5, True), (0.5, True)]
    assert _gemms(lora.mlp("W")) == [] and _gemms(lora.mlp("B")) == [(0.5, False), (0.5, False)]
    assert _gemms(lora.head("BW")) == [(0.5, False)]  # the output head is frozen too
    # the same rule as a plain function: frozen, not an adapter -> no weight gradient
    assert split(full.attention("F"), "W", frozen=True) == []


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_adapter_shapes_and_parameters_per_rank(tp: int) -> None:
    r = 16
    c = _costs(tp, lora={"rank": r})
    q = (HEADS + 2 * KV) * (H // HEADS)
    shapes = {(dict(k.shape)["n"], dict(k.shape)["k"]) for k in c.attention("F") + c.mlp("F") if k.adapter}
    # column-parallel bases (QKV, fc1): A k -> r/tp, B r -> n/tp; row-parallel (out, fc2): A k/tp -> r, B r -> n/tp
    assert shapes == {
        (max(1, r / tp), H),
        (q / tp, r),
        (r, HEADS * (H // HEADS) / tp),
        (H / tp, r),
        (2 * FFN / tp, r),
        (r, FFN / tp),
    }
    per_target = {"qkv": (H + q), "proj": (H + H), "fc1": (H + 2 * FFN), "fc2": (FFN + H)}
    assert c.trainable_params(0).dense == pytest.approx(sum(per_target.values()) * r / tp)
    assert c.trainable_params(0).expert == 0.0
    assert c.trainable_head_params() == 0.0 and c.trainable_embedding_params() == 0.0
    assert c.layer_params(0).dense > 40 * c.trainable_params(0).dense  # the base stays held


def test_only_the_adapters_are_reduced_stepped_and_given_state() -> None:
    graph = chain_topology(2, 1e9)
    full = build_plan(_spec(), graph, FixedCompute(1.0, 2.0))
    lora = build_plan(_spec(lora={"rank": 8}), graph, FixedCompute(1.0, 2.0))

    def dp_bytes(plan: Any) -> float:
        return sum(o.coll.nbytes for o in plan.ops if o.rank == 0 and o.coll is not None and o.traffic_class == "dp")

    trained = 4 * _costs(lora={"rank": 8}).trainable_params(0).dense
    assert lora.params_per_rank[0] == pytest.approx(trained)
    assert dp_bytes(lora) / dp_bytes(full) == pytest.approx(trained / full.params_per_rank[0])
    assert full.memory is not None and lora.memory is not None
    f, lo = full.memory.ranks[0], lora.memory.ranks[0]
    assert lo.params == pytest.approx(f.params)  # the frozen weights are held
    assert lo.grads == pytest.approx(f.grads * trained / full.params_per_rank[0])
    assert lo.optimizer == pytest.approx(f.optimizer * trained / full.params_per_rank[0])


def test_packed_documents_attend_within_themselves() -> None:
    whole, packed = _costs(), _costs(document_tokens=256)
    (w,), (p,) = whole.attention_core("F"), packed.attention_core("F")
    assert dict(w.shape)["seq"] == S and dict(w.shape)["batch"] == 1
    # S / L documents of L tokens: 1/8 of the whole sequence's causal FLOPs
    assert dict(p.shape)["seq"] == 256 and dict(p.shape)["batch"] == S / 256
    unfused = _costs(document_tokens=256, flash_attention=False).attention_core("F")
    assert dict(unfused[0].shape)["n"] == 256 and dict(unfused[0].shape)["tokens"] == S * HEADS
    assert _costs(document_tokens=4 * S).attention_core("F") == whole.attention_core("F")  # longer: one document


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {
                "training": {"lora": {"rank": 8}},
                "model": {
                    **MODEL,
                    "mla": {
                        "q_lora_rank": 64,
                        "kv_lora_rank": 64,
                        "qk_nope_head_dim": 32,
                        "qk_rope_head_dim": 16,
                        "v_head_dim": 32,
                    },
                },
            },
            "training.lora",
        ),
        ({"training": {"document_tokens": 256}, "parallelism": {"cp": 2}}, "training.document_tokens"),
        ({"training": {"lora": {"targets": ["linear_router"]}}}, "training.lora.targets"),
        ({"training": {"lora": {"rank": 0}}}, "training.lora.rank"),
        ({"training": {"document_tokens": 0}}, "training.document_tokens"),
        ({"model": {**MODEL, "sliding_window": {"tokens": 128}}, "parallelism": {"cp": 2}}, "model.sliding_window"),
        ({"model": {**MODEL, "sliding_window": {"tokens": 0}}}, "model.sliding_window.tokens"),
    ],
)
def test_bad_lora_and_packing_input_is_one_line(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        load_workload({"model": MODEL, **data}, source="bad.yaml")
    line = str(err.value)
    assert "\n" not in line and line.startswith("bad.yaml") and field in line


def test_a_run_says_it_is_lora_and_packed() -> None:
    from netsim.workload.lora import training_note

    assert training_note(None, None) is None
    note = training_note(_spec(lora={"rank": 8, "targets": ["linear_qkv"]}).training.lora, 300)
    assert note is not None and note.startswith("LoRA rank 8 on linear_qkv: base weights frozen")
    assert "documents of 300 tokens" in note
    assert training_note(None, 300) == "packed documents of 300 tokens, each attending only to itself"


def test_frozen_gemms_store_no_inputs_for_weight_gradients() -> None:
    # bf16, TP 1: a GEMM saves its input at 2 bytes; per micro-batch of S tokens
    from netsim.workload.memory import ActivationModel
    from netsim.workload.recompute import get_recompute

    def act(**training: Any) -> ActivationModel:
        return ActivationModel(_spec(**training), 1, S, get_recompute("none"))

    full, qkv, none = act(), act(lora={"targets": ["linear_qkv"]}), act(lora={"targets": ["linear_proj"]})
    # the attention block: its QKV input (the norm's output) stays only while QKV is adapted
    assert full.attention() == qkv.attention() == none.attention() + 2 * S * H
    # the MLP: fc1's input (S x H) and fc2's input (S x FFN) go with the frozen weights
    assert full.mlp() - qkv.mlp() == pytest.approx(2 * S * (H + FFN))
    # adapting fc2 keeps its input (16 bits, as the adapter's own linear layer saves it)
    assert act(lora={"targets": ["linear_fc2"]}).mlp() == pytest.approx(qkv.mlp() + 2 * S * FFN)
    # the output head keeps its norm's input and the logits, not the projection's input
    assert full.head() - qkv.head() == pytest.approx(2 * S * H)


@pytest.mark.parametrize("recipe", FP8_RECIPES)
def test_frozen_gemms_make_only_row_wise_fp8_copies(recipe: str) -> None:
    # no weight gradient reads a frozen GEMM's column-wise input or output gradient: Transformer
    # Engine casts them row-wise only (netsim.workload.fp8); an MLP of [T, H] -> [T, 2F] -> [T, H]
    def quant(lora: dict[str, Any] | None, part: str) -> float:
        training = {"lora": lora} if lora else {}
        spec = load_workload(
            {"model": {**MODEL, "dtype": "fp8", "fp8_recipe": recipe}, "training": training}, [], source="t"
        )
        costs = ModelCosts(spec.model, 1, 1, lora=spec.training.lora)
        return sum(c.time_s(_Bytes(), "fp8") for c in costs.mlp(part) if c.quant)

    q = quant_bytes(recipe)
    f = q.frozen()
    assert quant(None, "F") == pytest.approx(q.after_norm * S * H + q.other * S * FFN)
    assert quant(None, "B") == pytest.approx(q.grad * S * (2 * FFN + H))
    assert quant({"targets": ["linear_qkv"]}, "F") == pytest.approx(f.after_norm * S * H + f.other * S * FFN)
    assert quant({"targets": ["linear_qkv"]}, "B") == pytest.approx(f.grad * S * (2 * FFN + H))
    # one byte per element fewer (delayed scaling: a norm-fed input needs no cast at all)
    assert q.other - f.other == pytest.approx(1.0 if recipe != "blockwise" else f.column)
    assert (f.after_norm == 0.0) == (recipe == "delayed")
