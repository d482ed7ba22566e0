"""Shared helpers for user-facing specs: YAML loading, ``--set`` overrides, pydantic validation.

Every spec (topology, workload, scenario) follows the same path from a file to a validated
object, so every spec error reads the same way (docs/architecture.md, Conventions)::

    data = load_mapping(path)                    # YAML -> dict, SpecError on malformed YAML
    data = apply_overrides(data, ["a.b=3"])      # --set key=value, values read as YAML scalars
    spec = validate_model(MySpec, data, source=str(path), overrides=["a.b=3"])

* :func:`load_yaml` reads a file with a safe loader that also rejects duplicate keys; a
  syntax error becomes one :class:`~netsim.errors.SpecError` naming the file and the line.
* :func:`apply_overrides` sets dotted paths (``backend.oversubscription=2``,
  ``links.0.bandwidth=100GB/s``) in a deep copy, creating missing mappings on the way.
* :func:`validate_model` turns the first pydantic ``ValidationError`` (unknown keys first:
  a misspelt key explains the "missing" one) into a one-line ``SpecError`` whose field is the
  dotted path of the offending key (discriminated-union tags removed) and whose message says
  what is allowed: the allowed keys for an unknown key, the allowed values for an enum, the
  allowed units for a quantity.  A problem in a value that a
  ``--set`` override wrote is attributed to that override rather than to the file.

Models derive from :class:`SpecModel` (``extra="forbid"``, frozen) and declare quantities with
the annotated types :data:`Bandwidth`, :data:`Duration`, :data:`Bytes` and :data:`Flops`, which
accept unit strings ("400Gbps", "1.5us", "80GB", "989TFLOPS") and store SI floats, and ratios
with :data:`Ratio` (2, 1.5 or "2:1").
"""

from __future__ import annotations

import copy
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from netsim.errors import LimitError, SpecError, UnitError
from netsim.limits import MAX_NESTING, MAX_SPEC_BYTES, QUANTITY_MAX, check_file_size, check_structure
from netsim.units import parse_bandwidth, parse_bytes, parse_duration, parse_flops

__all__ = [
    "Bandwidth",
    "Bytes",
    "Duration",
    "Flops",
    "Ratio",
    "SpecModel",
    "apply_overrides",
    "load_mapping",
    "load_yaml",
    "override_for",
    "parse_override",
    "validate_model",
]

M = TypeVar("M", bound=BaseModel)


class SpecModel(BaseModel):
    """Base of every spec model: unknown keys are errors, objects are immutable, and a
    ``true``/``false`` is not a number (pydantic would read it as 1/0)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """A bool in a numeric field becomes the text ``true``/``false``, which the field's own
        validation refuses (so the error names the field)."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                for key in {name, field.alias} - {None}:
                    value = data.get(key)
                    if isinstance(value, bool) and _numeric_only(field.annotation):
                        data = {**data, key: str(value).lower()}
        return data


def folder_name(value: str) -> str:
    """``value`` as the name of one folder (a run's or a sweep's default output ``runs/<name>``):
    no path separator, not ``.`` or ``..``, no leading dot, no control character (a ValueError
    otherwise, which validation turns into a one-line error naming the field)."""
    bad = (
        not value
        or value in (".", "..")
        or value.startswith(".")
        or any(c in value for c in "/\\")
        or any(ord(c) < 32 for c in value)
    )
    if bad:
        raise ValueError(
            f"must be one folder name (letters, digits, '-', '_', '.'; no '/', no leading '.'), got {value!r}"
        )
    return value


def _numeric_only(tp: Any) -> bool:
    """Whether annotation ``tp`` takes numbers and no booleans (int, float, int | None, ...)."""
    union = get_origin(tp) in (Union, types.UnionType)
    members = [a for a in (get_args(tp) if union else (tp,)) if a is not type(None)]
    return bool(members) and all(m in (int, float) for m in members)


# --------------------------------------------------------------------------- quantities


def _quantity(
    parse: Callable[[object, str], float], what: str, example: str, *, strictly_positive: bool, kind: str
) -> BeforeValidator:
    """A pydantic validator that reads a quantity with units and checks its sign and range
    (finite, at most :data:`netsim.limits.QUANTITY_MAX` of its ``kind``)."""

    def validate(value: object) -> float:
        try:
            x = parse(value, what)
        except UnitError as exc:
            hint = "" if "allowed" in exc.message else f"; write e.g. {example}"
            raise ValueError(exc.message + hint) from None
        if strictly_positive and x <= 0:
            raise ValueError(f"must be a {what} > 0, e.g. {example} (got {value!r})")
        if x < 0:
            raise ValueError(f"must be a {what} >= 0, e.g. {example} (got {value!r})")
        top = QUANTITY_MAX[kind]
        if not math.isfinite(x) or x > top:
            raise ValueError(f"must be a finite {what} of at most {top:.4g} (SI units), e.g. {example} (got {value!r})")
        return x

    return BeforeValidator(validate)


Bandwidth = Annotated[
    float, _quantity(parse_bandwidth, "bandwidth", "400Gbps or 450GB/s", strictly_positive=True, kind="bandwidth")
]
"""A bandwidth > 0 in bytes per second; accepts "400Gbps", "450GB/s", 5e10."""

Duration = Annotated[
    float, _quantity(parse_duration, "duration", "0.5us or 900ns", strictly_positive=False, kind="duration")
]
"""A duration >= 0 in seconds; accepts "1.5us", "900ns", 1e-6."""

Bytes = Annotated[float, _quantity(parse_bytes, "size", "80GB or 64MiB", strictly_positive=True, kind="bytes")]
"""A size > 0 in bytes; accepts "80GB", "64MiB", 1e9."""

Flops = Annotated[float, _quantity(parse_flops, "compute rate", "989TFLOPS", strictly_positive=True, kind="flops")]
"""A compute rate > 0 in FLOP/s; accepts "989TFLOPS", 1e15."""


def _ratio(value: object) -> float:
    """Read an oversubscription-style ratio: 2, 2.5, "2:1", "3:2" -> a float > 0."""
    if isinstance(value, str) and ":" in value:
        num, _, den = value.partition(":")
        try:
            x = float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read {value!r} as a ratio; write e.g. 2 or 2:1") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        x = float(value)
    else:
        try:
            x = float(str(value))
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a ratio; write e.g. 2 or 2:1") from None
    if not x > 0:
        raise ValueError(f"must be a ratio > 0, e.g. 1 (non-blocking) or 2:1 (got {value!r})")
    if x > 1e6:
        raise ValueError(f"must be a ratio of at most 1e6, e.g. 1 (non-blocking) or 2:1 (got {value!r})")
    return x


Ratio = Annotated[float, BeforeValidator(_ratio)]
"""A finite ratio > 0; accepts 2, 1.5, "2:1"."""


# --------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys and reads no base-60 numbers.

    YAML 1.1 (PyYAML's default) reads an unquoted ``2:1`` as the sexagesimal integer 121; here
    it stays the string ``"2:1"`` (as in YAML 1.2), which ratio fields then understand.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# PyYAML's int and float patterns without their base-60 alternatives
_INT = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, _INT if tag.endswith(":int") else _FLOAT if tag.endswith(":float") else rx) for tag, rx in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load(text: str, source: str | None = None) -> Any:
    """Parse YAML text; nesting and (alias-expanded) size are checked (:mod:`netsim.limits`)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise LimitError(f"nested deeper than {MAX_NESTING} levels", source=source) from None
    check_structure(data, source)
    return data


def _plain_value(raw: str) -> bool:
    """Whether a --set value is plain YAML data (no anchor, alias or explicit tag)."""
    try:
        events = list(yaml.parse(raw, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return True  # the loader reports the syntax error
    for ev in events:
        if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) or getattr(ev, "tag", None):
            return False
    return True


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file (safe loader, duplicate keys rejected).

    Raises:
        SpecError: the file is missing or unreadable, or not valid YAML; the message names the
            file and, for syntax errors, the line and column.
    """
    p = Path(path)
    source = str(path)
    check_file_size(p, MAX_SPEC_BYTES, "a YAML spec")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("file not found", source=source) from None
    except IsADirectoryError:
        raise SpecError("is a directory, expected a YAML file", source=source) from None
    except UnicodeDecodeError:
        raise SpecError("not a UTF-8 text file", source=source) from None
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror}", source=source) from None
    try:
        return _load(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        problem = exc.problem or exc.context or "syntax error"
        raise SpecError(f"malformed YAML: {problem}", source=source, field=where) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", source=source) from None


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping (see :func:`load_yaml`)."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SpecError(f"the top level must be a mapping of keys to values, got {got}", source=str(path))
    return data


# --------------------------------------------------------------------------- overrides


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    """Split ``"a.b.c=value"`` into ``(("a", "b", "c"), value)``; the value is read as YAML.

    ``"x=300GB/s"`` -> ``"300GB/s"``, ``"x=2"`` -> ``2``, ``"x=null"`` -> ``None``.
    """
    source = f"--set {item}"
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError("expected key=value with a dotted key, e.g. backend.oversubscription=2", source=source)
    parts = tuple(p.strip() for p in key.split("."))
    if any(not p for p in parts):
        raise SpecError(f"empty component in key {key!r}; use a.b.c=value", source=source)
    if not _plain_value(raw):
        raise SpecError(
            f"the value {raw!r} uses a YAML anchor, alias or tag; give plain data (quote it to mean the text)",
            source=source,
        )
    try:
        value = _load(raw, source) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not a YAML value"
        raise SpecError(f"cannot read the value {raw!r}: {problem}", source=source) from None
    return parts, value


def set_item(source: str | None) -> str | None:
    """The ``KEY=VALUE`` item an error's source ``--set KEY=VALUE`` names (what
    :func:`apply_overrides` blames), or None for any other source."""
    return source[len("--set ") :] if source and source.startswith("--set ") else None


def flow_value(value: Any) -> str:
    """``value`` as one line of YAML (flow style), the way a ``--set`` item carries it: the
    inverse of :func:`parse_override`'s value (``[1, 2]``, ``false``, ``'a: b'``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31 - 1, allow_unicode=True, sort_keys=False)
    text = text.strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].rstrip()
    elif text == "...":
        text = ""
    return text


def override_items(values: Mapping[str, Any]) -> list[str]:
    """``{"a.b": 2, "c": "x"}`` -> ``["a.b=2", "c=x"]``: ``--set`` items that
    :func:`apply_overrides` reads back as the same values."""
    return [f"{key}={flow_value(value)}" for key, value in values.items()]


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with each ``key=value`` override applied in order.

    Keys are dotted paths into nested mappings (missing mappings are created); a numeric
    component indexes a list (``links.0.bandwidth=100GB/s``).  Values are parsed as YAML
    scalars, so units stay strings for the spec to parse and ``null`` removes a section.

    Raises:
        SpecError: malformed override, or a path that runs through a non-mapping value.
    """
    out: dict[str, Any] = copy.deepcopy(dict(data))
    for item in overrides:
        parts, value = parse_override(item)
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "<top level>"
            if isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            elif isinstance(node, list):
                if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                    raise SpecError(
                        f"{where} is a list of {len(node)} items; {part!r} is not a valid index", source=f"--set {item}"
                    )
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            else:
                raise SpecError(
                    f"{where} is a {type(node).__name__} ({node!r}), not a mapping with key {part!r}",
                    source=f"--set {item}",
                )
    return out


# --------------------------------------------------------------------------- validation


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` wrappers from a type annotation."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _union_members(tp: Any) -> list[type[BaseModel]]:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [m for a in get_args(tp) for m in _union_members(a)]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return []


def _tags(model: type[BaseModel]) -> set[str]:
    """The literal values of a model's ``Literal`` fields (its discriminated-union tags)."""
    out: set[str] = set()
    for field in model.model_fields.values():
        if get_origin(field.annotation) is Literal:
            out.update(str(v) for v in get_args(field.annotation))
    return out


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _walk(root: type[BaseModel], loc: Sequence[int | str]) -> tuple[list[str], type[BaseModel] | None, Any]:
    """Follow a pydantic error location through the model classes.

    Returns the user-facing path (discriminated-union tags removed), the model class that owns
    the last key (for listing allowed keys) and the annotation reached at the end.
    """
    path: list[str] = []
    tp: Any = root
    owner: type[BaseModel] | None = None
    for elem in loc:
        base = _unwrap(tp)
        origin = get_origin(base)
        members = _union_members(tp)
        if origin in (list, tuple, Sequence) or origin in (dict, Mapping):
            path.append(str(elem))
            args = get_args(base)
            tp = args[-1] if args else Any
            continue
        if len(members) > 1:
            chosen = [m for m in members if str(elem) in _tags(m)]
            if chosen:  # a union tag: select the member, keep it out of the path
                tp = chosen[0]
                continue
        if len(members) == 1:
            owner = members[0]
            fields = {(f.alias or n): f for n, f in owner.model_fields.items()}
            fields.update(owner.model_fields)
            path.append(str(elem))
            tp = fields[str(elem)].annotation if str(elem) in fields else Any
            continue
        path.append(str(elem))
        tp = Any
    return path, owner, tp


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: Mapping[str, Any], owner: type[BaseModel] | None, end_type: Any) -> str:
    """One readable sentence for one pydantic error, saying what is allowed."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = ", ".join(_field_names(owner)) if owner is not None else "see the documentation"
        return f"unknown key; allowed keys: {allowed}"
    if kind == "union_tag_invalid":
        return f"must be one of {ctx.get('expected_tags')} (got {_short(ctx.get('tag'))})"
    if kind == "union_tag_not_found":
        tags = sorted({t for m in _union_members(end_type) for t in _tags(m)})
        allowed = ", ".join(repr(t) for t in tags) if tags else "see the documentation"
        return f"required key is missing; allowed values: {allowed}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {_short(value)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys to values (got {_short(value)})"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()), "")
        return f"must be {bounds[kind]} {bound} (got {_short(value)})"
    msg = str(err["msg"])
    if isinstance(value, dict | list):
        return msg
    return f"{msg} (got {_short(value)})"


def override_for(field: str, overrides: Sequence[str]) -> str | None:
    """The last override whose key is ``field``, one of its parents or one of its children."""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if key and (field == key or field.startswith(key + ".") or key.startswith(field + ".")):
            return item
    return None


def validate_model(model: type[M], data: Any, *, source: str | None, overrides: Sequence[str] = ()) -> M:
    """Validate ``data`` against ``model``; turn the first error into a one-line SpecError.

    Args:
        model: the spec model class.
        data: plain data (from YAML, after overrides).
        source: the file the data came from (for the message).
        overrides: the ``--set`` items applied to ``data``; an error in a field they wrote is
            attributed to ``--set key=value`` instead of the file.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt key also makes the intended key "missing": report the unknown key first
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        path, owner, end_type = _walk(model, first["loc"])
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path.append(str((first.get("ctx") or {}).get("discriminator", "kind")).strip("'"))
        field = ".".join(path) or None
        message = _describe(first, owner, end_type)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        item = override_for(field, overrides) if field else None
        if item is not None:
            source = f"--set {item}"
        elif field and first["type"] in ("missing", "extra_forbidden"):
            # e.g. --set backend.fabric=fat-tree makes backend.leaves_per_pod required
            parent = field.rpartition(".")[0]
            sibling = next(
                (o for o in reversed(overrides) if o.partition("=")[0].strip().rpartition(".")[0] == parent), None
            )
            if sibling is not None:
                source = f"{source} with --set {sibling}" if source else f"--set {sibling}"
        raise SpecError(message, source=source, field=field) from None
