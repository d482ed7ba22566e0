"""Every shell command the documentation shows runs (docs/development.md, "Documentation").

Commands are the lines of ```bash blocks and the ``$ `` lines of ```console / ```text / plain
blocks.  Each page gets a test that runs its commands in order in a scratch directory (links
to the repository's examples/, topologies/, workloads/, tests/, benchmarks/, docs/ and a copy
of the default run, what the quickstart leaves): ``netsim`` commands through the real entry
point in this process, others in a shell.  A command must exit 0, or 2 where the page shows an
``error:`` line, which must then be the line netsim prints.  Commands that take minutes run in
the slow test of their page (``-m slow``); commands that install packages or run the test suite
are what CI's quickstart runs (``.ci/run``); commands that need data from outside the repository
or an optional extra are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from netsim.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(
    [
        DOCS / "readme_head.md",
        *(p for p in DOCS.glob("*.md") if p.name not in ("readme_head.md", "index.md")),
        *(DOCS / "sections").glob("*.md"),
    ]
)

#: install / test-suite commands: CI runs them (.ci/run: the quickstart in a fresh venv)
CI_ONLY = re.compile(r"^(pip install|python -m pip install|python -m pytest)")

#: commands that take minutes (regular expressions over the command); run by the slow tests
SLOW = [
    r"^python benchmarks/",
    r"^mypy\b|&& mypy\b",
    r"^netsim study (locmoe|lab-)",
    r"^netsim study layouts examples/",
    r"^netsim validate( |$)",
    r"^netsim profile\b",
    r"^netsim gallery\b",
    r"^netsim sweep examples/sweeps/",
    r"^rm -r sweeps/",
    r"--nodes (8|16|32|64|256)\b(?!.*--(graphml|json))",
    r"^pyinstrument\b",
    r"^netsim validate-kernels .*--quick",
]

#: commands that need something outside the repository: (pattern, reason)
EXTERNAL = [
    (r"\$VIDUR", "needs a checkout of Vidur's profiling data"),
    (r"\$LIGER", "needs a checkout of Liger-Kernel's benchmark data"),
    (r"^netsim profile --device cuda", "needs a CUDA device"),
    (r"~/models/|qwen\.parquet", "needs a downloaded Hugging Face model checkpoint"),
    (r"^netsim import kineto train\.json", "needs deepseek-ai/profile-data's train.json (not shipped: no licence)"),
]

#: commands that need an optional extra: (pattern, module)
NEEDS = [
    (r"^netsim (study locmoe|lab|profile)\b", "torch"),
    # the router lab trains its byte-level BPE with tokenizers (the torch extra), unless --tokenizer byte
    (r"^netsim (study locmoe|lab)\b(?!.*--tokenizer byte)", "tokenizers"),
    (r"^pyinstrument\b", "pyinstrument"),
    (r"hf_routing_trace\.py", "transformers"),
    (r"^mkdocs\b", "mkdocs"),
]


#: a synopsis, not a command: an upper-case placeholder (SWEEP.yaml, DIR), optional parts, choices
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{1,}\b|\[|\.\.\.|\||<")


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str
    error: str | None = None  # the error line the page shows for it


def _joined(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join ``\\``-continued lines; (first line number, text)."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, text in lines:
        if not buf:
            start = n
        if text.rstrip().endswith("\\"):
            buf.append(text.rstrip()[:-1].strip())
            continue
        buf.append(text.strip())
        out.append((start, " ".join(b for b in buf if b)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def _strip_comment(text: str) -> str:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        list(lexer)
    except ValueError:
        return text
    # cut at the first unquoted " #"
    quote = None
    for i, c in enumerate(text):
        if c in "'\"" and quote is None:
            quote = c
        elif c == quote:
            quote = None
        elif c == "#" and quote is None and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text.rstrip()


def page_commands(page: Path) -> list[Command]:
    """The commands ``page`` shows, in order (module doc)."""
    rel = str(page.relative_to(ROOT))
    out: list[Command] = []
    lang: str | None = None
    block: list[tuple[int, str]] = []
    for n, line in enumerate(page.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if lang is None:
                lang, block = line[3:].strip() or "plain", []
                continue
            out += _block_commands(rel, lang, block)
            lang = None
            continue
        if lang is not None:
            block.append((n, line))
    return out


def _block_commands(rel: str, lang: str, block: list[tuple[int, str]]) -> list[Command]:
    if lang in ("bash", "sh", "shell"):
        lines = [(n, t) for n, t in block if t.strip() and not t.strip().startswith("#")]
        return [Command(rel, n, cmd) for n, t in _joined(lines) if (cmd := _strip_comment(t))]
    if lang not in ("console", "text", "plain"):
        return []
    cmds: list[Command] = []
    if lang == "plain" and not any(t.startswith("$ ") for _, t in block):  # a list of commands, synopses
        return [
            Command(rel, n, cmd)
            for n, t in _joined([x for x in block if x[1].startswith("netsim ")])
            if not PLACEHOLDER.search(t) and (cmd := _strip_comment(t))
        ]
    i = 0
    while i < len(block):
        n, t = block[i]
        if not t.startswith("$ "):
            i += 1
            continue
        parts = [(n, t[2:])]
        while parts[-1][1].rstrip().endswith("\\") and i + 1 < len(block):
            i += 1
            parts.append(block[i])
        i += 1
        output = []
        while i < len(block) and not block[i][1].startswith("$ "):
            output.append(block[i][1])
            i += 1
        errors = [o for o in output if o.startswith("error: ")]
        text = _strip_comment(_joined(parts)[0][1])
        cmds.append(Command(rel, n, text, errors[0] if len(errors) == 1 else ("" if errors else None)))
    return cmds


def _matches(patterns: list[str], text: str) -> bool:
    return any(re.search(p, text) for p in patterns)


def _skip_reason(cmd: Command) -> str | None:
    if CI_ONLY.search(cmd.text):
        return "run by CI (.ci/run)"
    for pat, why in EXTERNAL:
        if re.search(pat, cmd.text):
            return why
    for pat, module in NEEDS:
        if re.search(pat, cmd.text) and importlib.util.find_spec(module) is None:
            return f"needs {module}"
    return None


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``runs/default``: what the quickstart's ``netsim run`` leaves."""
    where = tmp_path_factory.mktemp("quickstart")
    _run_netsim(["run", "--out", str(where / "default"), "--quiet"], where)
    return where / "default"


def _scratch(tmp_path: Path, default_run: Path | None) -> Path:
    for name in (
        "examples",
        "topologies",
        "workloads",
        "tests",
        "benchmarks",
        "docs",
        "netsim",
        "pyproject.toml",
        ".ci",
    ):
        (tmp_path / name).symlink_to(ROOT / name)
    if default_run is not None:
        shutil.copytree(default_run, tmp_path / "runs" / "default")
    return tmp_path


def _run_netsim(args: list[str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


@functools.cache
def _shim_dir() -> Path:
    """A private folder (one per test process) for the `netsim` shim of shell lines."""
    return Path(tempfile.mkdtemp(prefix="netsim-docs-bin-"))


def _run_shell(text: str, cwd: Path) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    bin_dir = _shim_dir()  # not under cwd: commands shown to run at the repository root run there
    shim = bin_dir / "netsim"  # `netsim` inside a shell line: this source tree
    # -P: the page's scratch directory (with its `netsim` link) is not on sys.path, so netsim is
    # imported from ROOT and numba's cached kernels are found (through the link: compiled anew)
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -P -m netsim "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run(text, shell=True, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=3600)
    return res.returncode, res.stdout, res.stderr


def _check(cmd: Command, cwd: Path) -> None:
    simple = cmd.text.startswith("netsim ") and not re.search(r"[|&;<>]", cmd.text)
    at_root = re.match(r"(python|ruff|mypy|mkdocs) ", cmd.text) is not None  # developer commands: the repo root
    code, _out, err = (
        _run_netsim(shlex.split(cmd.text)[1:], cwd) if simple else _run_shell(cmd.text, ROOT if at_root else cwd)
    )
    where = f"{cmd.page}:{cmd.line}: {cmd.text}"
    if cmd.error is None:
        assert code == 0, f"{where}\nexit {code}\n{err[-2000:]}"
        return
    assert code == 2, f"{where}: expected the error the page shows, got exit {code}\n{err[-2000:]}"
    if cmd.error:
        real = err.strip().splitlines()[-1]
        shown = re.escape(" ".join(cmd.error.split())).replace(re.escape("..."), ".*")
        assert re.fullmatch(shown, " ".join(real.split())), f"{where}\npage: {cmd.error}\nreal: {real}"


def _run_page(page: Path, tmp_path: Path, default_run: Path, *, slow: bool) -> None:
    # the README's quickstart makes runs/default itself; every other page starts after it
    cwd = _scratch(tmp_path, None if page.name == "readme_head.md" else default_run)
    ran = 0
    for cmd in page_commands(page):
        if _skip_reason(cmd) is not None:
            continue
        if _matches(SLOW, cmd.text) and not slow:
            continue
        _check(cmd, cwd)
        ran += 1
    if ran == 0:
        pytest.skip("no command of this page runs in this test")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_commands(page: Path, tmp_path: Path, default_run: Path) -> None:
    _run_page(page, tmp_path, default_run, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_commands_slow(page: Path, tmp_path: Path, default_run: Path) -> None:
    _run_page(page, tmp_path, default_run, slow=True)


def test_the_harness_finds_the_commands() -> None:
    readme = page_commands(DOCS / "readme_head.md")
    texts = [c.text for c in readme]
    assert texts[:3] == [
        "pip install . && netsim run",
        "python -m pip install -e '.[test]' && python -m pytest -m \"not slow\" -n 2",
        "netsim run",
    ]
    assert all(c.text for pg in PAGES for c in page_commands(pg))
    for pattern, _why in EXTERNAL:  # every exception still stands for a command the docs show
        assert any(re.search(pattern, c.text) for pg in PAGES for c in page_commands(pg)), pattern
