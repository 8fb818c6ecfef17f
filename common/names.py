"""Registry lookups that fail with the closest registered names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UnknownNameError(ValueError):
    """A method, task, grid or suite name that is not registered."""


def unknown(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}")
