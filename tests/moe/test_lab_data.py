"""Router-lab data: text sources, tokenizer, domain-heterogeneous sharding, convergence checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netsim.errors import SpecError
from netsim.moe.lab_check import balanced_drop_rate, convergence_problem, convergence_report, final_window
from netsim.moe.lab_data import SOURCES, DomainSampler, domain_nodes, load_domains, make_tokenizer


def test_sources_that_ship_with_python_are_distinct_kinds_of_text() -> None:
    doms, info = load_domains(["python", "c", "docs"], max_bytes=60_000, max_file_bytes=8_000)
    by = {d.name: d.text for d in doms}
    assert b"def " in by["python"] and b"#define" in by["c"] and b"The " in by["docs"]
    assert all(len(t) == 60_000 for t in by.values())
    again, info2 = load_domains(["python", "c", "docs"], max_bytes=60_000, max_file_bytes=8_000)
    assert info == info2 and [d.text for d in again] == [d.text for d in doms]
    assert [d["name"] for d in info["domains"]] == ["python", "c", "docs"]


def test_unknown_source_names_the_field() -> None:
    with pytest.raises(SpecError, match="unknown corpus source 'klingon'") as exc:
        load_domains(["klingon"], max_bytes=1000, max_file_bytes=1000)
    assert exc.value.field == "domains"
    assert {"python", "c", "docs", "man-de", "man-fr"} <= set(SOURCES.names())


def test_domain_owner_nodes() -> None:
    assert domain_nodes(4, 2).tolist() == [0, 0, 1, 1]
    assert domain_nodes(3, 2).tolist() == [0, 0, 1]
    assert domain_nodes(2, 4).tolist() == [0, 1]  # fewer domains than nodes: j % nodes


@pytest.mark.parametrize("sort", [0.0, 0.5, 1.0])
def test_domain_sort_knob_from_iid_to_sorted(sort: float) -> None:
    node = np.repeat(np.arange(2), 4)  # 8 ranks, 2 nodes
    s = DomainSampler(4, node, sort)
    src = np.repeat(np.arange(8), 2000)
    dom = s.draw(src, np.random.default_rng(0))
    own = domain_nodes(4, 2)[dom] == node[src]
    # own-domain share: sort + (1 - sort) * (2 of 4 domains)
    assert s.expected_own_share() == pytest.approx(sort + (1 - sort) * 0.5)
    assert own.mean() == pytest.approx(s.expected_own_share(), abs=0.02)
    if sort == 0.0:  # i.i.d.: every node sees all four sources equally often
        for k in range(2):
            counts = np.bincount(dom[node[src] == k], minlength=4) / (node[src] == k).sum()
            assert np.allclose(counts, 0.25, atol=0.02)
    if sort == 1.0:
        assert own.all()
    with pytest.raises(SpecError):
        DomainSampler(4, node, 1.5)


def test_bpe_tokenizer_is_trained_locally_and_deterministic() -> None:
    pytest.importorskip("tokenizers")
    doms, _ = load_domains(["python", "docs"], max_bytes=80_000, max_file_bytes=20_000)
    a = make_tokenizer("bpe", 400, [d.text for d in doms])
    b = make_tokenizer("bpe", 400, [d.text for d in doms])
    ids = a.encode(doms[0].text[:5000])
    assert a.vocab_size == 400 and ids.max() < 400 and len(ids) < 5000 / 1.5  # sub-word: > 1.5 bytes/token
    assert np.array_equal(ids, b.encode(doms[0].text[:5000]))
    assert make_tokenizer("byte", 0, []).encode(b"ab").tolist() == [97, 98]
    with pytest.raises(SpecError, match="unknown tokenizer"):
        make_tokenizer("wordpiece", 100, [])


# -- convergence ---------------------------------------------------------------------------------


def test_balanced_drop_rate_by_hand() -> None:
    # 2 tokens, 2 experts, cf 0.5: capacity ceil(0.5 * 2 / 2) = 1; an expert gets 2 tokens with
    # probability 1/4 and drops one: 2 experts * 1/4 * 1 / 2 assignments = 1/4
    assert balanced_drop_rate(2, 2, 0.5) == pytest.approx(0.25)
    assert balanced_drop_rate(128, 16, None) == 0.0
    assert balanced_drop_rate(256, 16, 1.25) < balanced_drop_rate(128, 16, 1.25) < balanced_drop_rate(64, 16, 1.25)


def test_configurations_that_cannot_converge() -> None:
    assert final_window(600) == (450, 600) and final_window(3) == (2, 3)
    assert convergence_problem(steps=600, tokens_per_group=256, experts=16, capacity_factor=1.25) is None
    field, msg = convergence_problem(steps=30, tokens_per_group=256, experts=16, capacity_factor=1.25) or ("", "")
    assert field == "steps" and ">= 80" in msg
    field, msg = convergence_problem(steps=600, tokens_per_group=32, experts=16, capacity_factor=1.25) or ("", "")
    assert field == "batch" and "perfectly balanced" in msg
    assert convergence_problem(steps=600, tokens_per_group=32, experts=16, capacity_factor=None) is None


def _rows(n: int, loss: object, cv: object, unused: float = 0.0, drop: object = 0.02) -> tuple[list, list]:
    losses = [{"step": i, "task_loss": loss(i) if callable(loss) else loss} for i in range(n)]
    metrics = [
        {
            "step": i,
            "layer": ly,
            "drop_rate": drop(i) if callable(drop) else drop,
            "share_cross_node": 0.5,
            "expert_load_cv": cv(i) if callable(cv) else cv,
            "unused_experts": unused,
        }
        for i in range(n)
        for ly in range(2)
    ]
    return losses, metrics


def test_convergence_report() -> None:
    ok = convergence_report(*_rows(100, 2.0, 0.2), experts=16)
    assert ok["converged"] and ok["window"] == [75, 100] and ok["previous_window"] == [50, 75]
    # a falling language-model loss is what training does; only a rising one (divergence) fails
    falling = convergence_report(*_rows(100, lambda i: 6.0 - 0.04 * i, 0.2), experts=16)
    assert falling["converged"] and falling["task_loss"]["relative_change"] < -0.2
    rising = convergence_report(*_rows(100, lambda i: 2.0 + 0.04 * i, 0.2), experts=16)
    assert not rising["converged"] and "task loss rising" in rising["reasons"][0]
    # the routing tests stay: a drop rate or cross-node share that moves by > 0.03 fails
    drops = convergence_report(*_rows(100, lambda i: 6.0 - 0.04 * i, 0.2, drop=lambda i: 0.3 - 0.002 * i), experts=16)
    assert drops["reasons"] == [drops["reasons"][0]] and drops["reasons"][0].startswith("drop_rate still moving")
    cv = convergence_report(*_rows(100, 2.0, lambda i: 3.0 - 0.02 * i), experts=16)
    assert any(r.startswith("expert_load_cv still moving") for r in cv["reasons"])
    collapsed = convergence_report(*_rows(100, 2.0, 3.0, unused=9, drop=0.8), experts=16)
    assert sum(r.startswith("collapsed") for r in collapsed["reasons"]) == 2
    short = convergence_report(*_rows(12, 2.0, 0.2), experts=16)
    assert not short["converged"] and "too few steps" in short["reasons"][0]
    assert math.isfinite(ok["task_loss"]["relative_change"])
