"""A base for the counters each stage reports (and the run log stores)."""

from __future__ import annotations

from dataclasses import fields
from typing import Self


class Counts:
    """Mixin for dataclasses of integer counters: add another instance, export as a dict."""

    def add(self, other: Self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
