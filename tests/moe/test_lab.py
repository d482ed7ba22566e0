"""Router lab: tiny training runs, outputs, determinism, CLI, and behaviour without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netsim.errors import SpecError
from netsim.moe import read_routing_trace
from netsim.moe.lab import LabConfig, load_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # real text: the sources of this package
    d = tmp_path_factory.mktemp("corpus")
    text = "\n".join(p.read_text() for p in sorted((ROOT / "netsim" / "moe").glob("*.py")))
    (d / "a.txt").write_text(text)
    return d / "a.txt"


def tiny(corpus: Path, **kw: object) -> LabConfig:
    base: dict[str, object] = dict(
        experts=4,
        ep=4,
        ranks_per_node=2,
        layers=2,
        hidden=16,
        heads=2,
        ffn_hidden=16,
        seq_len=16,
        batch=2,
        steps=3,
        corpus=[str(corpus)],
        tokenizer="byte",
        eval_batches=1,
    )
    base.update(kw)
    return LabConfig(**base)  # type: ignore[arg-type]


# -- no torch needed -----------------------------------------------------------------------


def test_default_corpus_is_the_stdlib_deterministically() -> None:
    a, info = load_corpus(max_bytes=200_000, max_file_bytes=4096)
    b, info2 = load_corpus(max_bytes=200_000, max_file_bytes=4096)
    assert a == b and info == info2
    assert info["source"].startswith("python-stdlib:")
    assert 0 < len(a) <= 200_000 and info["files"] >= 40
    assert info["first_file"] == sorted(Path(info["source"].split(":", 1)[1]).glob("*.py"))[0].name
    assert b"def " in a


def test_corpus_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="corpus path not found"):
        load_corpus([tmp_path / "missing.txt"])


def test_config_validation() -> None:
    with pytest.raises(SpecError, match="unknown router"):
        LabConfig(router="top9")
    with pytest.raises(SpecError, match="multiple of ep") as exc:
        LabConfig(experts=12, ep=8)
    assert exc.value.field == "experts"
    with pytest.raises(SpecError, match="divisible by experts"):
        LabConfig(router="locmoe", hidden=24, experts=16)
    with pytest.raises(SpecError, match="no parameter 'mu'"):
        LabConfig(router="switch", router_params={"mu": 0.1})
    with pytest.raises(SpecError) as exc:
        LabConfig(steps=0)
    assert exc.value.field == "steps"
    assert LabConfig(router="deepseek").resolved_router_params() == {"n_groups": 2, "topk_groups": 1, "top_k": 2}


def test_lab_without_torch_gives_install_hint(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # make `import torch` fail
        import numpy as np
        import netsim.moe as moe
        from netsim.errors import NetsimError
        r = moe.make_router("switch", n_experts=4, hidden=8)
        res = r.route(np.random.default_rng(0).normal(size=(16, 8)))
        assert res.counts.sum() + res.dropped == 16
        from netsim.moe.lab import LabConfig, run_lab
        try:
            run_lab(LabConfig(), {str(tmp_path / "out")!r})
        except NetsimError as e:
            print(e.one_line())
        from netsim.cli import main
        main(["lab", "--router", "switch", "--out", {str(tmp_path / "out2")!r}])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "pip install 'moe-netsim[torch]'" in proc.stdout
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: the router lab needs torch: pip install 'moe-netsim[torch]'"
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


# -- torch ----------------------------------------------------------------------------------


@pytest.mark.torch
def test_lab_run_writes_trace_losses_and_summary(corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from netsim.moe.lab import LabProgress, run_lab

    seen: list[LabProgress] = []
    out = tmp_path / "run"
    res = run_lab(tiny(corpus, router="switch"), out, progress=seen.append)
    assert [p.step for p in seen] == [1, 2, 3] and seen[-1].steps == 3
    assert sorted(p.name for p in out.iterdir()) == [
        ".netsim-output",
        "lab.json",
        "losses.csv",
        "losses.parquet",
        "routing.parquet",
    ]
    tr = read_routing_trace(out / "routing.parquet")
    assert tr.meta.router == "switch" and tr.meta.ep == 4 and tr.meta.experts == 4 and tr.meta.top_k == 1
    assert tr.meta.tokens_per_rank == 2 * 16
    assert tr.steps == [0, 1, 2] and tr.layers == [0, 1]
    tokens_per_rank = 2 * 16
    for _, _, _, tok, drp in tr.iter_counts():
        # every token of every rank is either kept or dropped (top-1)
        assert (tok + drp).sum(axis=1).tolist() == [tokens_per_rank] * 4
        assert (tok <= int(np.ceil(tokens_per_rank / 4 * 1.25))).all()  # per-rank capacity
    summary = json.loads((out / "lab.json").read_text())
    assert summary["final"]["task_loss"] > 0 and summary["final"]["eval_loss"] > 0
    assert "aux" in summary["final"]
    load = summary["load"]["final_window"]
    assert load["share_same_rank"] + load["share_same_node"] + load["share_cross_node"] == pytest.approx(1.0)
    assert summary["corpus"]["files"] == 1 and summary["placement"]["name"] == "contiguous"
    losses = pd.read_csv(out / "losses.csv")
    assert losses["step"].tolist() == [0, 1, 2]
    assert np.allclose(losses["loss"], losses["task_loss"] + losses["aux"], atol=1e-5)
    assert res.trace.table.equals(tr.table)
    # the verdict recomputed from the outputs (what a study reusing the run judges) is the run's own
    from netsim.moe.lab import lab_convergence

    again = json.loads(json.dumps(lab_convergence(out)))
    assert again == summary["convergence"] and "expert_load_cv" in again


@pytest.mark.torch
def test_lab_is_deterministic(corpus: Path) -> None:
    pytest.importorskip("torch")
    from netsim.moe.lab import train_lab

    a = train_lab(tiny(corpus, router="gshard", steps=2))
    b = train_lab(tiny(corpus, router="gshard", steps=2))
    pd.testing.assert_frame_equal(a.trace.table, b.trace.table)
    pd.testing.assert_frame_equal(a.losses, b.losses)
    c = train_lab(tiny(corpus, router="gshard", steps=2, seed=1))
    assert not c.losses.equals(a.losses)


@pytest.mark.torch
@pytest.mark.parametrize("router", ["hash", "rre", "mixtral", "deepseek", "expert_choice", "locmoe"])
def test_lab_runs_every_router(corpus: Path, router: str) -> None:
    pytest.importorskip("torch")
    from netsim.moe.lab import train_lab

    params = {"domains": 2} if router == "rre" else {}
    res = train_lab(tiny(corpus, router=router, steps=2, layers=1, router_params=params))
    t = res.trace
    assert t.meta.router == router and t.steps == [0, 1]
    tok, drp = t.counts(1, 0)
    if router in ("hash", "rre", "mixtral", "deepseek"):
        assert drp.sum() == 0 and tok.sum() == 4 * 2 * 16 * t.meta.top_k
    if router == "rre":
        # two domains = the data shards of ranks {0, 1} and {2, 3} -> expert groups {0, 1}, {2, 3}
        assert tok[:2, 2:].sum() == 0 and tok[2:, :2].sum() == 0 and tok.sum() == 4 * 2 * 16
    if router == "expert_choice":
        # ceil(32 * 2 / 4) = 16 tokens per expert per rank: perfectly balanced
        assert (tok == 16).all()
    if router == "locmoe":
        assert "loc" in res.losses.columns and (res.losses["loc"] > 0).all()
    if router == "deepseek":
        assert "seq_balance" in res.losses.columns and t.meta.top_k == 2


@pytest.mark.torch
def test_cli_lab_end_to_end(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from netsim.cli import main

    out = tmp_path / "cli"
    args = [
        "lab",
        "--router",
        "locmoe",
        "--experts",
        "4",
        "--ep",
        "4",
        "--ranks-per-node",
        "2",
        "--layers",
        "1",
        "--hidden",
        "16",
        "--heads",
        "2",
        "--ffn-hidden",
        "16",
        "--seq-len",
        "16",
        "--batch",
        "1",
        "--steps",
        "2",
        "--param",
        "mu=0.5",
        "--tokenizer",
        "byte",
        "--no-convergence-check",
    ]
    args += ["--corpus", str(corpus), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "loc loss" in text and "dispatch share cross node" in text
    summary = json.loads((out / "lab.json").read_text())
    assert summary["config"]["router_params"] == {"mu": 0.5}
    # existing output without --force: exit 2 before any training
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "pass --force" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*args[:-2], "--param", "nope=1", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: router.nope:") and "\n" not in err


def test_lab_config_that_cannot_converge_is_refused_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netsim.cli import main

    for extra, field in ((["--steps", "30"], "--steps"), (["--seq-len", "8", "--batch", "1"], "--batch")):
        with pytest.raises(SystemExit) as exc:
            main(["lab", "--router", "switch", *extra, "--out", str(tmp_path / "x")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {field}:") and "\n" not in err, err
        assert not (tmp_path / "x").exists()
    assert LabConfig().convergence_problem() is None
    with pytest.raises(SpecError) as e:
        LabConfig(domain_sort=2.0)
    assert e.value.field == "domain_sort"
    with pytest.raises(SpecError, match="unknown corpus source"):
        LabConfig(domains=["python", "sanskrit"])


@pytest.mark.torch
@pytest.mark.parametrize(("sort", "cross"), [(1.0, 0.0), (0.0, None)])
def test_rre_with_domain_sorted_data_never_leaves_the_node(sort: float, cross: float | None) -> None:
    # two sources, two nodes: python is node 0's, C is node 1's; RRE's expert group g serves source g and
    # (contiguous placement) lives on node g.  Fully sorted data: every token stays on its node.
    pytest.importorskip("torch")
    from netsim.moe.lab import train_lab

    cfg = LabConfig(
        router="rre",
        experts=4,
        ep=4,
        ranks_per_node=2,
        layers=1,
        hidden=16,
        heads=2,
        ffn_hidden=16,
        seq_len=16,
        batch=2,
        steps=2,
        domains=["python", "c"],
        domain_sort=sort,
        tokenizer="byte",
        max_corpus_bytes=200_000,
        eval_batches=1,
    )
    assert cfg.resolved_router_params()["domains"] == 2
    res = train_lab(cfg)
    share = res.summary["load"]["all_steps"]["share_cross_node"]
    if cross is not None:
        assert share == cross
    else:
        assert 0.1 < share < 0.9
    assert res.summary["corpus"]["domains"][1]["name"] == "c"
    conv = res.summary["convergence"]
    assert conv["converged"] is False and "too few steps" in conv["reasons"][0]
