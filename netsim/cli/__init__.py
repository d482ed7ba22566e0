"""The ``netsim`` command line.

Each subcommand lives in its own module of this package and registers itself on :data:`app`
(see ``_COMMAND_MODULES``).  Every user error is a :class:`~netsim.errors.NetsimError`; the
entry point :func:`main` prints it as one line on stderr and exits with code 2.

The command modules are imported on every start (typer needs their signatures for ``--help``),
so they stay light: numpy, pandas, networkx, simpy, matplotlib, numba and pydantic are imported
inside the command functions, never at module level (``netsim --help`` in a fraction of a
second; ``tests/test_cli_startup.py`` checks it, ``benchmarks/startup.py`` times it).
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from netsim.errors import NetsimError
from netsim.limits import NO_SIZE_CHECK_ENV

app = typer.Typer(
    name="netsim",
    help="moe-netsim: simulate GPU/NPU cluster networks for large-model (MoE) training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        from netsim import __version__

        typer.echo(f"netsim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    no_size_check: bool = typer.Option(
        False, "--no-size-check", help="Run requests larger than this machine's memory (also after a command)."
    ),
) -> None:
    """moe-netsim: simulate GPU/NPU cluster networks for large-model (MoE) training."""


# Subcommand modules; each defines ``register(app)``.  Order = order in --help.
_COMMAND_MODULES = (
    "netsim.cli.run_cmd",
    "netsim.cli.topology_cmd",
    "netsim.cli.flows_cmd",
    "netsim.cli.collective_cmd",
    "netsim.cli.calibrate_cmd",
    "netsim.cli.validate_cmd",
    "netsim.cli.lab_cmd",
    "netsim.cli.study_cmd",
    "netsim.cli.profile_cmd",
    "netsim.cli.traces_cmd",
    "netsim.cli.report_cmd",
    "netsim.cli.sweep_cmd",
    "netsim.cli.presets_cmd",
)

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a subcommand still being written
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def fail(message: str) -> None:
    """Print a one-line error and exit 2 (for CLI-level problems that are not NetsimErrors)."""
    raise NetsimError(message)


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """ClickException classes of click and of the click copy bundled with typer (>= 0.29)."""
    found: list[type[BaseException]] = []
    for mod in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(mod).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


#: the arguments of the command being run (for provenance records such as kernel tables)
invoked_args: list[str] = []


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, map NetsimError to one stderr line + exit 2."""
    invoked_args[:] = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in invoked_args if a != "--no-size-check"]
    if len(args) != len(invoked_args):  # one flag for every command: set for this process and its workers
        os.environ[NO_SIZE_CHECK_ENV] = "1"
    try:
        if "--version" in args and len(args) > 1:
            extra = " ".join(a for a in args if a != "--version")
            raise NetsimError(f"--version takes no other arguments (got {extra!r})")
        rv = app(args=args, standalone_mode=False)
        if isinstance(rv, int) and rv != 0:  # click returns Exit codes (e.g. 130 on Ctrl-C)
            if rv == 130:
                print("error: interrupted", file=sys.stderr)
            sys.exit(rv)
    except NetsimError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except MemoryError:
        print(
            "error: out of memory: this request needs more memory than this machine has; make it smaller "
            "(fewer nodes, sizes or steps)",
            file=sys.stderr,
        )
        sys.exit(2)

    except Exception as exc:  # click usage errors (typer may vendor its own click)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `netsim` alone: the help, which is not an error
            text = exc.format_message()  # type: ignore[attr-defined]  # empty when rich already printed it
            if text.strip():
                print(text)
            sys.exit(0)
        if isinstance(exc, _click_exceptions()):
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            if message:  # `netsim` alone prints the help, with no error line after it
                print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        raise
    sys.exit(0)
