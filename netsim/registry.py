"""One registry idiom for every pluggable strategy (routers, schedules, placements, path policies,
collective models, collective cost models, compute models, ...).

A :class:`Registry` maps the name a user writes in YAML or on the command line to a small object
(a class or a function).  Registering one touches no engine code::

    COST_MODELS: Registry[type[CostModel]] = Registry("collective cost model", field="collective_cost")

    @COST_MODELS.register("ideal")
    class IdealCost(CostModel): ...

    COST_MODELS.get("ideal")     # the class
    COST_MODELS.get("psychic")   # SpecError: unknown collective cost model 'psychic'; allowed: ideal, nccl

An unknown name is a one-line :class:`~netsim.errors.SpecError` that names the field and lists the
allowed names.  Names keep registration order (what ``--help`` shows) unless the registry is made
with ``sort_names=True`` (kinds whose entries live in several modules and are listed alphabetically,
such as the MoE routers); aliases (old spellings kept for compatibility) resolve to the same entry
but are not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from netsim.errors import SpecError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named strategies of one kind.

    Args:
        kind: what the entries are, for messages ("router", "path policy").
        field: the spec field or CLI option the name comes from, for messages.
        sort_names: list the names alphabetically instead of in registration order.
    """

    def __init__(self, kind: str, *, field: str | None = None, sort_names: bool = False) -> None:
        self.kind = kind
        self.field = field
        self.sort_names = sort_names
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (and ``aliases``)."""

        def deco(obj: T) -> T:
            self.add(name, obj, aliases=aliases)
            return obj

        return deco

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> None:
        """Register ``obj`` under ``name``; a name may be registered once."""
        if name in self._entries or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj
        for alias in aliases:
            if alias in self._entries or alias in self._aliases:
                raise ValueError(f"{self.kind} alias {alias!r} is registered twice")
            self._aliases[alias] = name

    def canonical(self, name: str, *, source: str | None = None, field: str | None = None) -> str:
        """The registered name ``name`` stands for (itself, or the entry an alias points to); an
        unknown one is a SpecError naming ``field`` (default: the registry's, e.g. a command-line
        option instead of the spec field)."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise SpecError(
            f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}",
            source=source,
            field=field or self.field,
        )

    def get(self, name: str, *, source: str | None = None) -> T:
        """The entry registered as ``name`` (or one of its aliases); a one-line SpecError otherwise."""
        return self._entries[self.canonical(name, source=source)]

    def names(self) -> list[str]:
        """Registered names in registration order, or sorted with ``sort_names`` (aliases excluded)."""
        return sorted(self._entries) if self.sort_names else list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]
