"""Valid ranges of numeric config fields, declared in each config dataclass as `LIMITS` beside its fields."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """lo <= x <= hi (or lo < x with `lo_open`); None: unbounded. A list value is checked element by element."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)

    def __str__(self) -> str:
        lo, hi = _number(self.lo), _number(self.hi)
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)  # [0, 1]
DISCOUNT = Range(0, 1, lo_open=True)  # (0, 1]


def out_of_range(cfg: Any) -> list[tuple[str, Any, Range]]:
    """(field, value, range) of each field of a config dataclass instance outside its declared LIMITS."""
    bad = []
    for name, rng in getattr(cfg, "LIMITS", {}).items():
        value = getattr(cfg, name)
        values = value if isinstance(value, list) else [value]
        if value is not None and not all(v in rng for v in values):
            bad.append((name, value, rng))
    return bad


def check_choices(cfg: Any, prefix: str = "algo") -> None:
    """Raise ValueError naming the key if a string field is not one of the values its config declares in
    `CHOICES` (a ClassVar beside `LIMITS`)."""
    for name, allowed in getattr(cfg, "CHOICES", {}).items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ValueError(f"{prefix}.{name} must be one of {', '.join(allowed)}, got {value!r}")
