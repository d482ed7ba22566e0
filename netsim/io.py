"""Outputs: atomic writes, and the guard that keeps netsim from touching what is not its own.

Run directories and result files are written under a temporary sibling name and renamed into
place only when complete (docs/architecture.md, step 7), so a failed or interrupted command leaves
nothing that looks finished.  Tables are written as both CSV and Parquet.

The output rules (``docs/sections/inputs.md``), checked before any work starts:

* Every directory netsim creates holds a marker file, :data:`MARKER`, naming what it is
  (``run``, ``sweep``, ``study``, ...).  An existing directory is replaced only when it carries
  the marker *and* the user passed ``--force``; a sweep or study folder with the marker of its
  own kind is resumed.  An existing directory without the marker is never moved, replaced or
  written into (an empty one is used as it is).  An existing *file* is replaced only with
  ``--force``.
* The working directory, its parents, the home directory, its parents and ``/`` are refused.
* Missing parent folders are created (like ``mkdir -p``), for every command; the nearest
  existing one must be a writable folder.  Folders created for an output that then fails are
  removed again (only if still empty).
* Every OS error on output (read-only, permission, exists as a file, is a folder, a path under
  a regular file, name too long, disk full) is an :class:`~netsim.errors.OutputError`: one
  line, exit 2, and the temporary files are gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netsim.errors import OutputError

__all__ = [
    "MARKER",
    "atomic_dir",
    "atomic_file",
    "check_output_dir",
    "check_output_file",
    "claim_dir",
    "marker_kind",
    "output_error",
    "write_json",
    "write_table",
]

#: the file inside every directory netsim writes; its JSON names the kind of output
MARKER = ".netsim-output"

_PHRASES = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "the folder is not empty",
    errno.ELOOP: "too many symbolic links",
}
#: errors that, raised while writing an output's content, are about the output (not an input)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _show(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    return text if text else "''"


def output_error(exc: OSError, path: str | os.PathLike[str], field: str | None = None) -> OutputError:
    """One-line :class:`OutputError` for an OS error on output ``path``."""
    what = _PHRASES.get(exc.errno or 0) or (os.strerror(exc.errno) if exc.errno else str(exc))
    return OutputError(f"cannot write {_show(path)}: {what.lower()}", field=field)


def marker_kind(directory: str | os.PathLike[str]) -> str | None:
    """The kind of netsim output ``directory`` is (``run``, ``sweep``, ...), or None when it has no marker."""
    marker = Path(directory) / MARKER
    try:
        if marker.is_symlink() or not marker.is_file():
            return None
        data = json.loads(marker.read_text()[:4096])
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return str(kind) if kind else None


def _write_marker(directory: Path, kind: str) -> None:
    from netsim import __version__

    text = json.dumps({"kind": kind, "netsim": __version__}, sort_keys=True) + "\n"
    (directory / MARKER).write_text(text)


def _protected(path: Path) -> str | None:
    """What ``path`` is, when it is a folder netsim must never write to (else None)."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd:
        return "the working directory"
    if resolved in cwd.parents:
        return "a parent of the working directory"
    home = Path.home().resolve()
    if resolved == home:
        return "the home directory"
    if resolved in home.parents:
        return "a parent of the home directory"
    if resolved == Path(resolved.anchor):
        return "the file-system root"
    return None


def _check_names(path: Path, field: str | None) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise OutputError(f"cannot write {_show(path)}: file name too long (at most 255 bytes a name)", field=field)


def _check_parent(path: Path, field: str | None) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = path.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {_show(path)}: {_show(parent)} is a file, not a folder", field=field)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {_show(path)}: folder {_show(parent)} is not writable", field=field)


def check_output_dir(
    path: str | os.PathLike[str], *, force: bool = False, field: str | None = "--out", resume: str | None = None
) -> Path:
    """Check, before any work, that ``path`` may become (or be replaced by) a netsim output folder.

    Args:
        path: the output folder.
        force: replace an existing folder that carries netsim's marker.
        field: the option the path came from (named in errors).
        resume: the kind of folder that may be reused as it is (a sweep or study resumes).

    Raises:
        OutputError: the folder is protected, not netsim's, not writable, or exists without --force.
    """
    p = Path(path)
    try:
        _check_names(p, field)
        what = _protected(p)
        if what is not None:
            raise OutputError(f"refusing to write to {_show(path)}: it is {what}; give a new folder name", field=field)
        if p.is_symlink():
            raise OutputError(f"{_show(path)} is a symbolic link; give a new folder name", field=field)
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"{_show(path)} exists and is a file, not a folder", field=field)
            kind = marker_kind(p)
            if kind is None:
                if any(p.iterdir()):
                    raise OutputError(
                        f"{_show(path)} exists and was not written by netsim; netsim never replaces or writes into "
                        "such a folder: give a new folder name",
                        field=field,
                    )
            elif (resume is None or kind != resume) and not force:
                raise OutputError(
                    f"{_show(path)} exists (a netsim {kind} folder); pass --force to replace it", field=field
                )
        _check_parent(p, field)
    except OSError as exc:
        raise output_error(exc, path, field) from None
    return p


def check_output_file(path: str | os.PathLike[str], *, force: bool = False, field: str | None = "--out") -> Path:
    """Check, before any work, that ``path`` may be written as a file (replacing one only with ``force``)."""
    p = Path(path)
    try:
        _check_names(p, field)
        if p.is_dir():
            raise OutputError(f"{_show(path)} is a folder; give a file name", field=field)
        if p.exists() or p.is_symlink():
            if not p.is_file():
                raise OutputError(f"{_show(path)} exists and is not a regular file", field=field)
            if not force:
                raise OutputError(f"{_show(path)} exists; pass --force to replace it", field=field)
        _check_parent(p, field)
    except OSError as exc:
        raise output_error(exc, path, field) from None
    return p


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return those created (outermost first).  A
    folder another process creates meanwhile (a study's workers writing side by side into one
    parent) is used as it is, not counted as created."""
    missing: list[Path] = []
    d = directory
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    missing.reverse()
    created: list[Path] = []
    try:
        for m in missing:
            try:
                m.mkdir()
            except FileExistsError:
                if m.is_dir():
                    continue
                raise
            created.append(m)
    except BaseException:
        _remove_empty(created)
        raise
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove folders netsim created for an output that failed (innermost first; only empty ones)."""
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


def claim_dir(path: str | os.PathLike[str], *, kind: str, force: bool = False, field: str | None = "--out") -> Path:
    """Make ``path`` a netsim output folder of ``kind`` that commands write into file by file.

    A folder of the same kind is reused (a sweep or study resumes); a netsim folder of another
    kind is replaced with ``force``; anything else follows :func:`check_output_dir`.
    """
    p = check_output_dir(path, force=force, field=field, resume=kind)
    try:
        if p.exists() and marker_kind(p) not in (None, kind):
            shutil.rmtree(p)  # a netsim folder of another kind, replaced with --force
        _make_parents(p)
        if marker_kind(p) is None:
            _write_marker(p, kind)
    except OSError as exc:
        raise output_error(exc, path, field) from None
    return p


@contextlib.contextmanager
def atomic_dir(
    final: str | os.PathLike[str], *, force: bool = False, kind: str | None = "run", field: str | None = "--out"
) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block succeeds.

    ``kind`` is written into the directory's marker.  ``kind=None`` is a folder *inside* a
    netsim output (``figures/``): it has no marker of its own and an existing one is replaced
    when its parent is netsim's.  Otherwise an existing ``final`` is replaced only when it
    carries the marker and ``force`` is given (:func:`check_output_dir`), and only after the
    new content is complete.  On any error the temporary directory (and any parent folder
    created for it) is removed and ``final`` is left as it was.
    """
    final_path = Path(final)

    def check() -> None:
        if kind is not None:
            check_output_dir(final_path, force=force, field=field)
        elif final_path.exists() and marker_kind(final_path.parent) is None:
            raise OutputError(
                f"{_show(final_path)} exists in a folder netsim did not write; not replacing it", field=field
            )

    check()
    parent = final_path.parent
    try:
        created = _make_parents(parent)
    except OSError as exc:
        raise output_error(exc, final_path, field) from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.tmp-", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a run directory is ordinary output
        if kind is not None:
            _write_marker(tmp, kind)
    except OSError as exc:
        _remove_empty(created)
        raise output_error(exc, final_path, field) from None
    try:
        yield tmp
        check()  # the path may have changed while the content was computed
        _commit(tmp, final_path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        if isinstance(exc, OSError) and (exc.errno in _WRITE_ERRNOS or exc.filename in (str(tmp), str(final_path))):
            raise output_error(exc, final_path, field) from None
        raise


def _commit(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (already checked as replaceable) goes last."""
    if final.is_dir() and not any(final.iterdir()):
        os.rename(tmp, final)  # replaces an empty folder; the kernel refuses a non-empty one
        return
    if not final.exists():
        tmp.rename(final)
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    final.rename(old)
    try:
        tmp.rename(final)
    except OSError:
        old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str], mode: str = "w", *, field: str | None = None) -> Iterator[Any]:
    """Open a temporary file next to ``final``; rename it into place when the block succeeds.

    Missing parent folders are created (and removed again when the write fails).  An existing
    folder at ``final`` is an :class:`OutputError`; an existing file is replaced (callers that
    write a path the user gave check it first with :func:`check_output_file`).
    """
    final_path = Path(final)
    try:
        _check_names(final_path, field)
        if final_path.is_dir():
            raise OutputError(f"{_show(final_path)} is a folder; give a file name", field=field)
        created = _make_parents(final_path.parent)
    except OSError as exc:
        raise output_error(exc, final_path, field) from None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name[:200]}.tmp-", dir=final_path.parent)
        os.close(fd)
    except OSError as exc:
        _remove_empty(created)
        raise output_error(exc, final_path, field) from None
    try:
        with open(tmp_name, mode) as fh:
            yield fh
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp_name, final_path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        _remove_empty(created)
        if isinstance(exc, OSError) and (exc.errno in _WRITE_ERRNOS or exc.filename in (tmp_name, str(final_path))):
            raise output_error(exc, final_path, field) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_table(df: Any, directory: Path, stem: str, *, parquet: bool = True) -> None:
    """Write ``df`` as ``stem.csv`` (and ``stem.parquet``) in ``directory``; floats in full precision."""
    df.to_csv(directory / f"{stem}.csv", index=False, float_format="%.12g")
    if parquet:
        df.to_parquet(directory / f"{stem}.parquet", index=False)


def write_json(obj: Any, path: Path) -> None:
    """Write JSON with sorted keys and a trailing newline (byte-stable for the same input)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
