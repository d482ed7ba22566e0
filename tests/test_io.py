"""Outputs: atomic writes, ordinary permissions, and the guard that never touches what netsim did not write."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from netsim.cli import main
from netsim.errors import OutputError
from netsim.io import MARKER, atomic_dir, atomic_file, check_output_dir, check_output_file, claim_dir, marker_kind

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every path under ``root`` with a content hash and mtime (a folder: its listing)."""
    out: dict[str, tuple[str, int]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() else "\n".join(sorted(c.name for c in p.iterdir())).encode()
        out[str(p.relative_to(root))] = (hashlib.sha256(data).hexdigest(), st.st_mtime_ns)
    return out


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    return int(exc.value.code or 0), err


def test_outputs_get_ordinary_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "run") as d:
            (d / "a.txt").write_text("x")
        with atomic_file(tmp_path / "f.txt") as fh:
            fh.write("y")
    finally:
        os.umask(mask)
    assert _mode(tmp_path / "run") == 0o755
    assert _mode(tmp_path / "f.txt") == 0o644


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "a" / "b" / "run") as d:
        (d / "half.txt").write_text("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "c" / "f.txt") as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the parents created for them are gone too


def test_every_output_directory_carries_the_marker(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "run", kind="run") as d:
        (d / "summary.json").write_text("{}")
    assert marker_kind(tmp_path / "run") == "run"
    assert marker_kind(tmp_path) is None
    assert claim_dir(tmp_path / "sw", kind="sweep") == tmp_path / "sw" and marker_kind(tmp_path / "sw") == "sweep"


def test_a_netsim_directory_is_replaced_only_with_force(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with atomic_dir(out) as d:
        (d / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="pass --force"), atomic_dir(out) as d:
        (d / "new.txt").write_text("new")
    assert (out / "old.txt").read_text() == "old"
    with atomic_dir(out, force=True) as d:
        (d / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]  # no .old- or .tmp- left


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_netsim_did_not_write_is_never_replaced(tmp_path: Path, force: bool) -> None:
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.tex").write_text("\\documentclass{article}")
    before = _snapshot(tmp_path)
    with pytest.raises(OutputError, match="not written by netsim"), atomic_dir(user, force=force) as d:
        (d / "summary.json").write_text("{}")
    with pytest.raises(OutputError, match="not written by netsim"):
        claim_dir(user, kind="sweep", force=force)
    assert _snapshot(tmp_path) == before


def test_an_empty_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as d:
        (d / "a.txt").write_text("x")
    assert (tmp_path / "empty" / "a.txt").read_text() == "x"


def test_a_sweep_folder_resumes_and_another_kind_needs_force(tmp_path: Path) -> None:
    claim_dir(tmp_path / "s", kind="sweep")
    (tmp_path / "s" / "results.csv").write_text("x")
    claim_dir(tmp_path / "s", kind="sweep")  # resumed as it is
    assert (tmp_path / "s" / "results.csv").exists()
    with pytest.raises(OutputError, match="a netsim sweep folder"):
        claim_dir(tmp_path / "s", kind="study")
    claim_dir(tmp_path / "s", kind="study", force=True)
    assert marker_kind(tmp_path / "s") == "study" and not (tmp_path / "s" / "results.csv").exists()


def test_protected_folders_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "home" / "me" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "me"))
    for path, what in (
        ("", "the working directory"),
        (".", "the working directory"),
        ("..", "a parent of the working directory"),
        ("/", "a parent of the working directory"),
    ):
        with pytest.raises(OutputError, match=what):
            check_output_dir(path, force=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="the home directory"):
        check_output_dir(tmp_path / "home" / "me", force=True)
    with pytest.raises(OutputError, match="a parent of the home directory"):
        check_output_dir(tmp_path / "home", force=True)
    assert sorted(p.name for p in (tmp_path / "home" / "me").iterdir()) == ["work"]


def test_files_are_replaced_only_with_force(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("mine")
    with pytest.raises(OutputError, match="exists; pass --force"):
        check_output_file(f)
    assert check_output_file(f, force=True) == f
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, force=True)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_file(f / "x.csv", force=True)
    with pytest.raises(OutputError, match="file name too long"):
        check_output_file(tmp_path / ("x" * 300 + ".csv"))
    with pytest.raises(OutputError, match="is a folder"), atomic_file(tmp_path) as fh:
        fh.write("x")


def test_symlinked_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OutputError, match="symbolic link"):
        check_output_dir(tmp_path / "link", force=True)


def test_unwritable_parent_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == tmp_path else real(p, m))
    with pytest.raises(OutputError, match="is not writable"):
        check_output_dir(tmp_path / "run")
    with pytest.raises(OutputError, match="is not writable"):
        check_output_file(tmp_path / "deep" / "er" / "a.csv")


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EROFS, "read-only file system"),
        (errno.EDQUOT, "disk quota exceeded"),
    ],
)
def test_os_errors_while_writing_are_one_line(tmp_path: Path, code: int, words: str) -> None:
    with pytest.raises(OutputError, match=words) as exc, atomic_dir(tmp_path / "new" / "run") as d:
        (d / "a.csv").write_text("x")
        raise OSError(code, os.strerror(code), str(d / "b.csv"))
    assert "\n" not in str(exc.value)
    with pytest.raises(OutputError, match=words), atomic_file(tmp_path / "f.csv") as fh:
        fh.write("x")
        raise OSError(code, os.strerror(code))
    assert list(tmp_path.iterdir()) == []


def test_permission_error_at_rename_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", deny)
    with pytest.raises(OutputError, match="permission denied"), atomic_file(tmp_path / "f.csv") as fh:
        fh.write("x")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- every writing command


def _writers(tmp: Path, target: Path) -> dict[str, list[str]]:
    """Every command that writes, with its output pointed at ``target``."""
    t = str(target)
    flows = tmp / "in" / "flows.csv"
    return {
        "run": ["run", "--no-report", "-q", "--out", t],
        "compare": ["compare", str(tmp / "in"), "--out", t],
        "gallery": ["gallery", "--only", "default", "--out", t],
        "sweep": ["sweep", str(ROOT / "examples" / "sweeps" / "oversubscription.yaml"), "-q", "--out", t],
        "study": ["study", "locmoe", "--quick", "--out", t],
        "lab": ["lab", "--router", "switch", "--steps", "1", "--out", t],
        "flows": ["flows", str(flows), "-t", "dgx-h100", "-n", "1", "--out", t],
        "collective --csv": ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "-e", "1MiB", "--csv", t],
        "collective --log": ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "-e", "1MiB", "--log", t],
        "topology --graphml": ["topology", "show", "dgx-h100", "--graphml", t],
        "topology --plot": ["topology", "show", "dgx-h100", "--plot", t],
        "import kineto": ["import", "kineto", str(FIX / "traces" / "moe_layer_cpu.json"), "--out", t],
        "import kineto --events": [
            "import",
            "kineto",
            str(FIX / "traces" / "moe_layer_cpu.json"),
            "--out",
            str(tmp / "new.csv"),
            "--events",
            t,
        ],
        "replay-chakra": ["replay-chakra", str(FIX / "traces" / "chakra4"), "-t", "dgx-h100", "-n", "1", "--out", t],
        "calibrate": ["calibrate", "nccl", str(FIX / "nccl" / "all_reduce_perf_1n.log"), "-t", "dgx-h100", "--out", t],
        "profile": ["profile", "--quick", "--kernels", "gemm", "--out", t],
        "validate-kernels": [
            "validate-kernels",
            str(ROOT / "netsim" / "data" / "kernels" / "cpu-amd-epyc-1thread.csv"),
            "--quick",
            "--kernels",
            "gemm",
            "--out",
            t,
        ],
        "report": ["report", t],
        "validate": ["validate", "--only", "nccl-tests-issue-212/*", "--out", t],
        "import vidur": ["import", "vidur", str(FIX / "vidur" / "h100"), "--out", t],
    }


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("command", sorted(_writers(Path("/x"), Path("/y"))))
def test_an_existing_folder_survives_every_writing_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, force: bool
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "flows.csv").write_text("src,dst,bytes,start_s\nn0.g0,n0.g1,1MB,0\n")
    user = tmp_path / "thesis"
    (user / "chapters").mkdir(parents=True)
    (user / "thesis.tex").write_text("\\documentclass{article}\n")
    (user / "chapters" / "intro.tex").write_text("Hello.\n")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    argv = _writers(tmp_path, user)[command] + (["--force"] if force and command != "report" else [])
    code, err = _cli(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert _snapshot(tmp_path) == before  # untouched, and nothing new anywhere


def test_run_twice_needs_force_and_replaces_only_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    flows = tmp_path / "f.csv"
    flows.write_text("src,dst,bytes,start_s\nn0.g0,n0.g1,1MB,0\n")
    base = ["flows", str(flows), "-t", "dgx-h100", "-n", "1", "--out", str(out)]
    assert _cli(base, capsys)[0] == 0
    assert marker_kind(out) == "flows"
    code, err = _cli(base, capsys)
    assert code == 2 and "pass --force to replace it" in err
    assert _cli([*base, "--force"], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "r"]


def test_missing_parent_folders_are_created_by_every_kind_of_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One rule for missing parents (like mkdir -p): a folder output, a file output, a trace import."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.csv").write_text("src,dst,bytes,start_s\nn0.g0,n0.g1,1MB,0\n")
    kineto = str(FIX / "traces" / "moe_layer_cpu.json")
    for argv in (
        ["flows", "f.csv", "-t", "dgx-h100", "-n", "1", "--out", "a/b/run"],
        ["import", "kineto", kineto, "--out", "c/d/ops.csv"],
        ["collective", "all_reduce", "-t", "dgx-h100", "-n", "1", "-e", "1MiB", "--csv", "e/f/x.csv"],
    ):
        code, err = _cli(argv, capsys)
        assert code == 0, err
    assert marker_kind(tmp_path / "a" / "b" / "run") == "flows"
    assert (tmp_path / "c" / "d" / "ops.csv").is_file() and (tmp_path / "e" / "f" / "x.csv").is_file()


def test_a_parent_folder_made_meanwhile_by_another_writer_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes writing side by side into one new parent (a study's lab workers): the one
    that loses the race to create the parent finds it made and writes into it."""
    real_mkdir = Path.mkdir
    parent = tmp_path / "par" / "lab"

    def racing_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self == parent and not self.exists():
            real_mkdir(self)  # the other process got there first
            raise FileExistsError(errno.EEXIST, "File exists", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    with atomic_dir(parent / "locmoe", kind="lab") as tmp:
        (tmp / "lab.json").write_text("{}")
    assert (parent / "locmoe" / "lab.json").read_text() == "{}"
    assert marker_kind(parent / "locmoe") == "lab"
