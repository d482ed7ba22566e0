"""Running the command line inside a test: exit code, stdout and stderr of ``netsim ARGS``."""

from __future__ import annotations

import pytest

from netsim.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``netsim`` with ``args`` through the real entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err
