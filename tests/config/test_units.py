"""Unit parsing at the boundary (netsim.units): SI floats out, UnitError naming the field."""

from __future__ import annotations

import pytest

from netsim.errors import SpecError, UnitError
from netsim.units import parse_bandwidth, parse_bytes, parse_duration, parse_flops


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("400Gbps", 5e10),
        ("400 Gb/s", 5e10),
        ("450GB/s", 4.5e11),
        ("50GBps", 5e10),
        ("25 GiB/s", 25 * 2**30),
        ("100Mbps", 1.25e7),
        ("1e9", 1e9),
        (3.2e10, 3.2e10),
    ],
)
def test_bandwidth(text: object, expected: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5us", 1.5e-6), ("900ns", 9e-7), ("2ms", 2e-3), ("3s", 3.0), ("1e-6", 1e-6), ("0", 0.0), (0.5, 0.5)],
)
def test_duration(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64MiB", 64 * 2**20), ("1.5GB", 1.5e9), ("4KiB", 4096), ("1e9", 1e9), ("8Gb", 1e9), (512, 512)],
)
def test_bytes(text: object, expected: float) -> None:
    assert parse_bytes(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("text", "expected"), [("989TFLOPS", 9.89e14), ("312 TFLOP/s", 3.12e14), ("1e15", 1e15)])
def test_flops(text: object, expected: float) -> None:
    assert parse_flops(text) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (parse_bandwidth, "fast"),
        (parse_bandwidth, "400GB"),  # a size, not a rate
        (parse_bandwidth, "400Qbps"),
        (parse_bandwidth, True),
        (parse_bandwidth, "inf"),
        (parse_duration, "1.5 parsecs"),
        (parse_duration, "5GB"),
        (parse_bytes, "64MiB/s"),
        (parse_bytes, [1, 2]),
        (parse_flops, "lots"),
    ],
)
def test_nonsense_is_rejected_naming_the_field(parser: object, text: object) -> None:
    with pytest.raises(UnitError) as info:
        parser(text, "node.some_field")  # type: ignore[operator]
    assert info.value.field == "node.some_field"
    assert "node.some_field" in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, SpecError)
