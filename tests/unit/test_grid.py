from __future__ import annotations

from fractions import Fraction

import pytest

from sidecar.grid import (
    Unwrapper,
    ceil_seconds,
    format_program_date_time,
    format_seconds,
    next_slot_boundary,
    rescale,
    round_seconds,
    seconds_to_ticks,
    slot_of,
)

D = 540_000  # 6 s


@pytest.mark.parametrize(
    ("u", "expected"),
    [(0, 0), (D - 1, 0), (D, 1), (D + 1, 1), (-1, -1), (1_700_000_000 * 90_000, 283_333_333)],
)
def test_slot_of(u: int, expected: int) -> None:
    assert slot_of(u, D) == expected


@pytest.mark.parametrize(("u", "expected"), [(0, 0), (1, D), (D, D), (D + 1, 2 * D), (-1, 0)])
def test_next_slot_boundary(u: int, expected: int) -> None:
    assert next_slot_boundary(u, D) == expected


@pytest.mark.parametrize(
    ("seconds", "ticks"),
    [("6", 540_000), (2.5, 225_000), ("0.04", 3_600), (Fraction(1, 25), 3_600), ("1.001", 90_090)],
)
def test_seconds_to_ticks(seconds: object, ticks: int) -> None:
    assert seconds_to_ticks(seconds) == ticks  # type: ignore[arg-type]


def test_seconds_to_ticks_rejects_fractions_of_a_tick() -> None:
    with pytest.raises(ValueError, match="90 kHz"):
        seconds_to_ticks("0.0000001")


@pytest.mark.parametrize(
    ("value", "tb", "ticks"),
    [(1000, Fraction(1, 1000), 90_000), (3, Fraction(1, 90_000), 3),
     (1, Fraction(1, 48_000), 1), (1024, Fraction(1, 48_000), 1920),
     (1001, Fraction(1, 30_000), 3003)],
)
def test_rescale(value: int, tb: Fraction, ticks: int) -> None:
    assert rescale(value, tb) == ticks


@pytest.mark.parametrize(
    ("ticks", "text"),
    [(540_000, "6.00000"), (1, "0.00001"), (90_090, "1.00100"), (3_003, "0.03337"), (0, "0.00000")],
)
def test_format_seconds_is_exact_decimal(ticks: int, text: str) -> None:
    assert format_seconds(ticks) == text


@pytest.mark.parametrize(
    ("ticks", "rounded", "ceiled"),
    [(540_000, 6, 6), (540_001, 6, 7), (584_999, 6, 7), (585_000, 7, 7), (45_000, 1, 1)],
)
def test_rounding_for_target_duration(ticks: int, rounded: int, ceiled: int) -> None:
    assert round_seconds(ticks) == rounded
    assert ceil_seconds(ticks) == ceiled


@pytest.mark.parametrize(
    ("u", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (90_000 * 1_700_000_000 + 45_000, "2023-11-14T22:13:20.500Z"),
        (89, "1970-01-01T00:00:00.000Z"),
        (90, "1970-01-01T00:00:00.001Z"),
    ],
)
def test_program_date_time(u: int, text: str) -> None:
    assert format_program_date_time(u) == text


WRAP33 = 1 << 33


@pytest.mark.parametrize(
    ("bits", "raw", "expected"),
    [
        # 33-bit MPEG-TS wrap, with an audio straggler from before the wrap.
        (33, [WRAP33 - 3000, WRAP33 - 10, 5, 3600, WRAP33 - 20, 7200],
         [WRAP33 - 3000, WRAP33 - 10, WRAP33 + 5, WRAP33 + 3600, WRAP33 - 20, WRAP33 + 7200]),
        # 32-bit RTMP milliseconds.
        (32, [(1 << 32) - 40, 0, 40], [(1 << 32) - 40, 1 << 32, (1 << 32) + 40]),
        # An encoder restart is a genuine backward jump, not a wrap: passes through.
        (33, [900_000, 0, 3600], [900_000, 0, 3600]),
        # No wrap configured.
        (None, [5, 1, 10], [5, 1, 10]),
        # Two wraps.
        (32, [(1 << 32) - 1, 0, (1 << 31), (1 << 32) - 1, 3],
         [(1 << 32) - 1, 1 << 32, (1 << 32) + (1 << 31), (2 << 32) - 1, (2 << 32) + 3]),
    ],
)
def test_unwrapper(bits: int | None, raw: list[int], expected: list[int]) -> None:
    unwrap = Unwrapper(bits)
    assert [unwrap(r) for r in raw] == expected
