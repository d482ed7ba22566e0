"""Router-lab data: text sources, a sub-word tokenizer, and domain-heterogeneous sharding.

Routing statistics are properties of a trained router on real data, and locality can only
emerge where the data tells a token which node it is on.  Real pipelines give it that signal:
PanGu-Sigma trains on 40+ domains and routes by domain (RRE), and loaders shard and pack by
source.  This module gives the router lab such data without any download.

**Sources** (:data:`SOURCES`, selected by name): distinct kinds of text that ship with the
Python installation that runs netsim, or with the Debian system it runs on.  Each source is a
sorted list of files, read in order, at most ``max_bytes`` per source, so the corpus is the same
on every machine with the same Python and image (its sha256 is recorded):

========  ===================================================================================
name      text
========  ===================================================================================
python    Python code: the top-level ``*.py`` files of the standard library (``sysconfig``)
c         C code: the CPython headers (``sysconfig`` ``include``, recursively)
docs      English prose: the Python documentation topics that ship in ``pydoc_data.topics``
man-de    German prose with troff markup: Debian's German manual pages (``/usr/share/man/de``)
man-fr    French prose with troff markup: Debian's French manual pages (``/usr/share/man/fr``)
========  ===================================================================================

The first three exist wherever Python does; the manual pages exist on Debian images that
install them (this project's machines do).  :data:`DEFAULT_DOMAINS` takes ``python, c, docs,
man-de``; a missing source is a one-line error that names it.

**Tokenizer**: ``byte`` (vocabulary 256, no training) or ``bpe``: a byte-level BPE trained
locally with the ``tokenizers`` package (Hugging Face, PyPI) on the training split of all
domains, ``vocab`` tokens, nothing downloaded.  Byte-level BPE is what GPT-2, RoBERTa and
Llama-3 style tokenizers use; a vocabulary of a few thousand keeps the lab's output head small.

**Sharding** (:class:`DomainSampler`): domain ``j`` of ``D`` belongs to node
``j * nodes // D`` (``j % nodes`` when ``D < nodes``).  Every sequence of a rank on node ``k``
is drawn from one of node ``k``'s own domains with probability ``domain_sort`` and from a
domain drawn uniformly over all domains otherwise; the window inside the domain is uniform.
``domain_sort = 0`` is fully i.i.d. (every rank sees the same mixture), ``1`` is fully
domain-sorted (a node reads only its own sources).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from netsim.errors import NetsimError, SpecError
from netsim.registry import Registry

__all__ = [
    "DEFAULT_DOMAINS",
    "SOURCES",
    "TOKENIZERS_HINT",
    "Domain",
    "DomainSampler",
    "Tokenizer",
    "domain_nodes",
    "load_corpus",
    "load_domains",
    "make_tokenizer",
]

TOKENIZERS_HINT = "the bpe tokenizer needs tokenizers: pip install 'moe-netsim[torch]' (or --tokenizer byte)"

#: sources read by default when the lab uses domains (see the module docstring)
DEFAULT_DOMAINS: tuple[str, ...] = ("python", "c", "docs", "man-de")

#: a source: () -> (description, list of (name, text bytes)) in a fixed order
SourceFn = Callable[[], tuple[str, list[tuple[str, bytes]]]]
SOURCES: Registry[SourceFn] = Registry("corpus source", field="domains")


def _files(root: Path, pattern: str, *, recursive: bool = False) -> list[tuple[str, bytes]]:
    paths = sorted((root.rglob if recursive else root.glob)(pattern))
    return [(str(p.relative_to(root)), p.read_bytes()) for p in paths if p.is_file()]


@SOURCES.register("python")
def _python() -> tuple[str, list[tuple[str, bytes]]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return f"Python standard library *.py ({root})", _files(root, "*.py")


@SOURCES.register("c")
def _c() -> tuple[str, list[tuple[str, bytes]]]:
    root = Path(sysconfig.get_paths()["include"])
    return f"CPython C headers ({root})", _files(root, "*.h", recursive=True)


@SOURCES.register("docs")
def _docs() -> tuple[str, list[tuple[str, bytes]]]:
    path = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    if not path.is_file():
        return f"Python documentation topics ({path})", []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    topics: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                topics.update({str(k): str(v) for k, v in value.items()})
    return f"Python documentation topics ({path})", [(k, topics[k].encode()) for k in sorted(topics)]


def _man(lang: str) -> SourceFn:
    def read() -> tuple[str, list[tuple[str, bytes]]]:
        root = Path("/usr/share/man") / lang
        out: list[tuple[str, bytes]] = []
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if not p.is_file():
                    continue
                try:
                    data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
                except (OSError, EOFError):
                    continue
                out.append((str(p.relative_to(root)), data))
        return f"Debian manual pages, {lang} ({root})", out

    return read


SOURCES.add("man-de", _man("de"))
SOURCES.add("man-fr", _man("fr"))


@dataclass(frozen=True)
class Domain:
    """One source's text: ``train`` and ``eval`` token arrays (tokenised by the lab)."""

    name: str
    description: str
    text: bytes
    files: int


def load_domains(names: Sequence[str], *, max_bytes: int, max_file_bytes: int) -> tuple[list[Domain], dict[str, Any]]:
    """Read the named sources: the first ``max_file_bytes`` of each file, in order, until the
    source has ``max_bytes``.

    Files that contain NUL bytes (binary) are skipped.  Raises a SpecError naming the source
    when it is unknown or has no text on this machine.
    """
    domains: list[Domain] = []
    for name in names:
        desc, files = SOURCES.get(name)()
        chunks: list[bytes] = []
        total = 0
        used = 0
        for _, data in files:
            if b"\x00" in data[:4096]:
                continue
            data = data[: min(max_file_bytes, max_bytes - total)]
            if not data:
                continue
            chunks.append(data)
            used += 1
            total += len(data) + 2
            if total >= max_bytes:
                break
        text = b"\n\n".join(chunks)[:max_bytes]
        if len(text) < 4096:
            raise SpecError(
                f"corpus source {name!r} has no text on this machine ({desc}); pick others from "
                f"{', '.join(SOURCES.names())}",
                field="domains",
            )
        domains.append(Domain(name, desc, text, used))
    h = hashlib.sha256()
    for d in domains:
        h.update(d.name.encode() + b"\0" + d.text)
    info = {
        "source": "domains",
        "domains": [
            {"name": d.name, "description": d.description, "files": d.files, "bytes": len(d.text)} for d in domains
        ],
        "bytes": sum(len(d.text) for d in domains),
        "sha256": h.hexdigest(),
    }
    return domains, info


# --------------------------------------------------------------------------------------------
# single-text corpus (--corpus PATH, or the stdlib when no domains are used)
# --------------------------------------------------------------------------------------------


def _is_text(data: bytes) -> bool:
    return b"\x00" not in data[:4096]


def load_corpus(
    paths: Sequence[str | Path] = (), *, max_bytes: int = 4 << 20, max_file_bytes: int = 16 << 10
) -> tuple[bytes, dict[str, Any]]:
    """The lab's training text and a description (source, files, bytes, sha256).

    With no ``paths``: the top-level ``*.py`` files of the Python standard library, sorted by
    name, the first ``max_file_bytes`` of each, until ``max_bytes``.  Otherwise the given files
    and (recursively, sorted) the text files inside given directories, whole, until
    ``max_bytes``.  Files are joined with a blank line.
    """
    files: list[Path] = []
    per_file: int | None
    if not paths:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.glob("*.py") if p.is_file())
        source = f"python-stdlib:{root}"
        per_file = max_file_bytes
        if not files:
            raise NetsimError(f"no Python standard library sources found under {root}; pass --corpus PATH")
    else:
        per_file = None
        source = "files"
        for raw in paths:
            p = Path(raw)
            if p.is_dir():
                files.extend(sorted(q for q in p.rglob("*") if q.is_file()))
            elif p.is_file():
                files.append(p)
            else:
                raise SpecError("corpus path not found", source=str(p), field="corpus")
    chunks: list[bytes] = []
    used: list[str] = []
    total = 0
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise SpecError(f"cannot read corpus file ({exc.strerror})", source=str(f), field="corpus") from None
        if not _is_text(data):
            continue
        if per_file is not None:
            data = data[:per_file]
        data = data[: max_bytes - total]
        if not data:
            break
        chunks.append(data)
        used.append(f.name if not paths else str(f))
        total += len(data) + 2
        if total >= max_bytes:
            break
    text = b"\n\n".join(chunks)[:max_bytes]
    info = {
        "source": source,
        "files": len(used),
        "bytes": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
        "first_file": used[0] if used else None,
        "last_file": used[-1] if used else None,
    }
    return text, info


# --------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------


class Tokenizer:
    """Bytes -> token ids.  ``byte``: the bytes themselves; ``bpe``: a trained byte-level BPE."""

    def __init__(self, kind: str, vocab_size: int, impl: Any = None) -> None:
        self.kind = kind
        self.vocab_size = vocab_size
        self._impl = impl

    def encode(self, text: bytes) -> NDArray[np.int64]:
        if self._impl is None:
            return np.frombuffer(text, dtype=np.uint8).astype(np.int64)
        # encode in blocks of lines: the same ids as one call, without one huge string
        lines = text.decode("utf-8", errors="replace").splitlines(keepends=True)
        out: list[NDArray[np.int64]] = []
        step = 2000
        for i in range(0, len(lines), step):
            enc = self._impl.encode_batch(["".join(lines[i : i + step])])
            out.append(np.asarray(enc[0].ids, dtype=np.int64))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size}


def make_tokenizer(kind: str, vocab_size: int, texts: Sequence[bytes]) -> Tokenizer:
    """A ``byte`` tokenizer, or a byte-level ``bpe`` of ``vocab_size`` trained on ``texts``."""
    if kind == "byte":
        return Tokenizer("byte", 256)
    if kind != "bpe":
        raise SpecError(f"unknown tokenizer {kind!r}; allowed: byte, bpe", field="tokenizer")
    try:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise NetsimError(TOKENIZERS_HINT) from None
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator((t.decode("utf-8", errors="replace") for t in texts), trainer=trainer)
    return Tokenizer("bpe", int(tok.get_vocab_size()), tok)


# --------------------------------------------------------------------------------------------
# domain-heterogeneous sharding
# --------------------------------------------------------------------------------------------


def domain_nodes(n_domains: int, nodes: int) -> NDArray[np.int64]:
    """Node that owns each domain: ``j * nodes // D`` (``j % nodes`` when ``D < nodes``)."""
    j = np.arange(n_domains, dtype=np.int64)
    return j % nodes if n_domains < nodes else (j * nodes) // n_domains


class DomainSampler:
    """Which domain each sequence of each rank is read from (see the module docstring)."""

    def __init__(self, n_domains: int, rank_node: NDArray[np.int64], domain_sort: float) -> None:
        if not 0.0 <= domain_sort <= 1.0:
            raise SpecError(f"must be in [0, 1] (got {domain_sort})", field="domain_sort")
        nodes = int(rank_node.max()) + 1
        owner = domain_nodes(n_domains, nodes)
        self.own = [np.flatnonzero(owner == k) for k in range(nodes)]
        # a node that owns no domain (more nodes than domains is handled by j % nodes) reads all
        self.own = [o if o.size else np.arange(n_domains) for o in self.own]
        self.rank_node = rank_node
        self.n_domains = n_domains
        self.domain_sort = float(domain_sort)

    def draw(self, src_rank: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
        """Domain of each sequence, ``src_rank[i]`` being the rank that reads sequence ``i``."""
        own = rng.random(src_rank.size) < self.domain_sort
        anyd = rng.integers(0, self.n_domains, size=src_rank.size)
        pick = rng.random(src_rank.size)
        out = anyd.copy()
        for i in np.flatnonzero(own):
            cand = self.own[int(self.rank_node[src_rank[i]])]
            out[i] = cand[min(int(pick[i] * cand.size), cand.size - 1)]
        return out

    def expected_own_share(self) -> float:
        """Probability that a sequence comes from its node's own domains."""
        sizes = np.array([o.size for o in self.own], dtype=np.float64)
        return float(self.domain_sort + (1 - self.domain_sort) * np.mean(sizes) / self.n_domains)
