"""What every fuzz test asserts about one malformed input, and the values that make inputs bad.

:func:`assert_rejected` runs one ``netsim`` command in-process in a scratch folder and checks
the contract of issue 19: exit code 2, exactly one line on stderr that starts with
``error:`` and names the file (or flag) and, where given, the field; no traceback; no new file
anywhere in the folder; no change to any file that was there.

The budget: ``NETSIM_FUZZ_EXAMPLES`` examples per test (default 5, derandomized, no example
database, so CI is deterministic); ``benchmarks/fuzz_inputs.py`` runs many more with random
seeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from netsim.cli import main

EXAMPLES = int(os.environ.get("NETSIM_FUZZ_EXAMPLES", "5"))
RANDOM = os.environ.get("NETSIM_FUZZ_RANDOM", "") == "1"

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

#: values that no numeric field of a spec accepts (wrong type, sign, size or finiteness)
BAD_NUMBERS: list[Any] = [
    -1,
    -0.5,
    "-5Gbps",
    "abc",
    "12 parsecs",
    [1, 2],
    {"a": 1},
    True,
    10**30,
    -(10**30),
    "1e400",
    float("nan"),
    float("inf"),
    "inf",
    "",
    "1e400Gbps",
    "NaNus",
    2**64,
]
bad_number = st.sampled_from(BAD_NUMBERS)
#: tokens a text reader must refuse where it expects a number
BAD_TOKENS = ["inf", "-inf", "nan", "NaN", "-5", "1e999", "99999999999999999999999", "abc", "0x1F", "1,5", "--"]
bad_token = st.sampled_from(BAD_TOKENS)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content (folders: their listing)."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        data = p.read_bytes() if p.is_file() else "\n".join(sorted(c.name for c in p.iterdir())).encode()
        out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_cli(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``netsim ARGV`` in-process in ``cwd``; return (exit code, stderr)."""
    err = io.StringIO()
    with _cwd(cwd), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return code, err.getvalue()


def assert_rejected(argv: list[str], cwd: Path, names: tuple[str, ...]) -> str:
    """Run the command and check the issue-19 contract; ``names``: one of them must be in the line."""
    before = snapshot(cwd)
    code, err = run_cli(argv, cwd)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code} for {argv}: {err[-2000:]}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr is not one error line: {err!r}"
    assert any(n in lines[0] for n in names), f"{lines[0]!r} names none of {names}"
    assert snapshot(cwd) == before, f"{argv} changed the folder"
    return lines[0]
