"""How a component states the values it accepts, once, for two uses.

A component class (data module, encoder, network, the LightningModule) declares

    @classmethod
    def config_problems(cls, values: Mapping, key: str) -> list[str]

listing what is wrong with its constructor arguments ``values`` (``key`` is its config path, e.g.
``model`` or ``model.generator``), each problem naming ``key.arg=value`` and what is allowed. Its
constructor raises :class:`ConfigError` with them (a component built from Python is checked too),
and ``config_checks.validate`` gathers the problems of every component of a run config before any
data is read or model built, so all of them are reported together. ``config_checks`` itself keeps
only what involves several components (attention resolutions against the image size, the token
limit against the encoder, devices against the machine).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from gan_ga_utils.errors import ConfigError


class Problems(list):
    """A list of problem lines with helpers that read ``values[name]`` and name ``key.name``."""

    def __init__(self, values: Mapping, key: str):
        super().__init__()
        self.values, self.key = values, key

    def _name(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def need(self, ok: bool, name: str, allowed: str) -> None:
        if not ok:
            self.append(f"{self._name(name)}={self.values.get(name)!r}: {allowed}")

    def choice(self, name: str, allowed: Iterable[Any]) -> None:
        allowed = list(allowed)
        if name in self.values and self.values[name] is not None:
            self.need(self.values[name] in allowed, name, f"allowed: {allowed}")

    def number(self, name: str, low: float | None = None, high: float | None = None, *, integer: bool = False,
               low_open: bool = False, high_open: bool = False) -> None:
        value = self.values.get(name)
        if value is None:
            return
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            self.append(f"{self._name(name)}={value!r}: must be {'an integer' if integer else 'a number'}")
            return
        if not math.isfinite(value):  # nan passes every comparison, inf every lower bound
            self.append(f"{self._name(name)}={value!r}: must be a finite number")
            return
        if not _in_range(value, low, high, low_open, high_open):
            self.append(f"{self._name(name)}={value!r}: must be {_range_text(low, high, low_open, high_open)}")

    def pair(self, name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, ordered: bool = False, example: str = "") -> None:
        """Two finite numbers (not bools) in the range, as :meth:`number` checks one; ``ordered``: the
        first at most the second. One message naming the key, the range and ``example``."""
        value = self.values.get(name)
        if value is None:
            return
        two = not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__len__") and len(value) == 2
        ok = two and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
                         and _in_range(v, low, high, low_open, high_open) for v in value)
        ok = ok and (not ordered or value[0] <= value[1])
        self.need(ok, name, f"must be two finite numbers {_range_text(low, high, low_open, high_open)}"
                  + (", the first at most the second" if ordered else "") + (f", e.g. {example}" if example else ""))


def _in_range(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    return ((low is None or (value > low if low_open else value >= low))
            and (high is None or (value < high if high_open else value <= high)))


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
    return " and ".join(x for x in (lo, hi) if x)


def raise_problems(problems: list[str]) -> None:
    """A constructor's check: all its problems in one ConfigError."""
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def check(cls: type, values: Mapping, key: str) -> None:
    """``cls.config_problems(values, key)`` raised as one ConfigError (for constructors)."""
    raise_problems(cls.config_problems(values, key))
