"""Pure grid arithmetic: integer 90 kHz ticks since the Unix epoch, no I/O, no floats.

Segment number ``N = floor(T / D)`` where ``T`` is grid time in ticks and ``D`` the
segment duration in ticks (invariant 2 of the cluster promise).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

TICKS_PER_SECOND = 90_000
TICK = Fraction(1, TICKS_PER_SECOND)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def seconds_to_ticks(seconds: float | int | str | Decimal | Fraction) -> int:
    """Exact conversion of a duration given in seconds (``"6"``, ``2.5``) to ticks."""
    value = Fraction(Decimal(str(seconds))) if not isinstance(seconds, Fraction) else seconds
    ticks = value * TICKS_PER_SECOND
    if ticks.denominator != 1:
        raise ValueError(f"{seconds} s is not a whole number of 90 kHz ticks")
    return int(ticks)


def rescale(value: int, time_base: Fraction) -> int:
    """Convert a timestamp in ``time_base`` units to ticks, rounding down (exact for ms and 90k)."""
    # Integer arithmetic: this runs for every packet, and Fraction objects are slow.
    return value * time_base.numerator * TICKS_PER_SECOND // time_base.denominator


def slot_of(u: int, duration: int) -> int:
    """The grid slot (segment number) that grid time ``u`` falls into."""
    return u // duration


def slot_start(number: int, duration: int) -> int:
    return number * duration


def next_slot_boundary(u: int, duration: int) -> int:
    """The first slot boundary at or after ``u``."""
    return -((-u) // duration) * duration


def format_seconds(ticks: int, places: int = 5) -> str:
    """Exact decimal rendering of a tick count in seconds (``540000`` -> ``"6.00000"``)."""
    quantum = Decimal(1).scaleb(-places)
    return str((Decimal(ticks) / TICKS_PER_SECOND).quantize(quantum, rounding=ROUND_HALF_UP))


def round_seconds(ticks: int) -> int:
    """Duration rounded to the nearest whole second, half up (the EXT-X-TARGETDURATION rule)."""
    return (ticks * 2 + TICKS_PER_SECOND) // (2 * TICKS_PER_SECOND)


def ceil_seconds(ticks: int) -> int:
    return -((-ticks) // TICKS_PER_SECOND)


def to_datetime(u: int) -> datetime:
    """Grid time as an aware UTC datetime, truncated to microseconds."""
    return _EPOCH + timedelta(microseconds=u * 1_000_000 // TICKS_PER_SECOND)


def format_program_date_time(u: int) -> str:
    """ISO 8601 with milliseconds and ``Z`` as EXT-X-PROGRAM-DATE-TIME wants it."""
    ms = u * 1000 // TICKS_PER_SECOND
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def from_datetime(dt: datetime) -> int:
    delta = dt - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * TICKS_PER_SECOND // 1_000_000


class Unwrapper:
    """Unwraps a timestamp that counts modulo ``2**bits`` (33-bit MPEG-TS, 32-bit RTMP).

    A step back by more than half the period is taken as a wrap; anything else passes
    through, so genuine backward jumps (encoder restart) stay visible to the epoch logic.
    """

    def __init__(self, bits: int | None) -> None:
        self.period = 1 << bits if bits else 0
        self.offset = 0
        self.last: int | None = None

    def __call__(self, raw: int) -> int:
        if not self.period:
            return raw
        if self.last is None:
            self.last = raw
            return raw
        half = self.period // 2
        delta = raw - self.last
        if delta < -half:
            self.offset += self.period
        elif delta > half and self.offset >= self.period:
            # A straggler from before the wrap (audio interleaved behind video): map it
            # into the previous period without moving the reference.
            return raw + self.offset - self.period
        self.last = raw
        return raw + self.offset
