"""The one registry idiom: names in order, aliases resolve, unknown names are one-line SpecErrors."""

from __future__ import annotations

import pytest

from netsim.errors import SpecError
from netsim.registry import Registry


def test_register_get_names_and_aliases() -> None:
    reg: Registry[type] = Registry("widget", field="options.widget")

    @reg.register("b", aliases=("old-b",))
    class B:
        pass

    @reg.register("a")
    class A:
        pass

    assert reg.names() == ["b", "a"]
    assert reg.get("a") is A and reg.get("old-b") is B
    assert reg.canonical("old-b") == "b"
    assert "old-b" in reg and "c" not in reg
    assert len(reg) == 2


def test_unknown_name_is_one_line_with_field_and_allowed() -> None:
    reg: Registry[int] = Registry("widget", field="options.widget")
    reg.add("x", 1)
    reg.add("y", 2)
    with pytest.raises(SpecError) as info:
        reg.get("z", source="s.yaml")
    assert str(info.value) == "s.yaml: options.widget: unknown widget 'z'; allowed: x, y"


def test_duplicate_registration_is_a_bug() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("x", 1)
    with pytest.raises(ValueError):
        reg.add("x", 2)
    with pytest.raises(ValueError):
        reg.add("y", 2, aliases=("x",))


def test_sorted_registry_lists_and_names_alphabetically() -> None:
    reg: Registry[int] = Registry("router", field="router", sort_names=True)
    reg.add("switch", 1)
    reg.add("deepseek", 2)
    reg.add("hash", 3, aliases=("table",))
    assert reg.names() == list(reg) == ["deepseek", "hash", "switch"]
    assert reg.items() == [("deepseek", 2), ("hash", 3), ("switch", 1)]
    assert reg.get("table") == 3
    with pytest.raises(SpecError) as exc:
        reg.get("top3")
    assert exc.value.one_line() == "router: unknown router 'top3'; allowed: deepseek, hash, switch"
