"""Checking a parsed scenario file against the schema, with errors that point into the file.

tomllib gives no positions for keys, so `_LineIndex` finds them in the text itself: enough
for the plain layout scenario files use (tables, arrays of tables, `key = value` lines).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from simulators.devices import AUTO_INTERVALS_MIN
from simulators.scenario_schema import (
    Boolean,
    Draw,
    NibpInterval,
    Number,
    Param,
    Value,
)


class ScenarioError(ValueError):
    """A scenario that cannot be used, naming the file, line and key where that is known."""

    def __init__(
        self, problem: str, source: str | None = None, line: int | None = None, key: str = ""
    ) -> None:
        self.problem = problem
        self.source = source
        self.line = line
        self.key = key
        where = ", ".join(
            part for part in (source, f"line {line}" if line is not None else "", key) if part
        )
        super().__init__(f"{where}: {problem}" if where else problem)


Path_ = tuple[str | int, ...]
_HEADER = re.compile(r"^\s*(\[\[|\[)\s*([A-Za-z0-9_-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


class _LineIndex:
    """Line numbers of tables and keys in the simple TOML scenario files are written in."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path_, int] = {}
        counts: dict[str, int] = {}
        context: Path_ = ()
        in_string = False
        for number, line in enumerate(text.splitlines(), start=1):
            if line.count('"""') % 2:
                in_string = not in_string
                continue
            if in_string:
                continue
            header = _HEADER.match(line)
            if header:
                name = header.group(2)
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, 0) + 1
                    context = (name, counts[name] - 1)
                else:
                    context = (name,)
                self._lines.setdefault(context, number)
                continue
            key = _KEY.match(line)
            if key:
                self._lines.setdefault((*context, key.group(1)), number)

    def line_of(self, path: Path_) -> int | None:
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None


def _label(path: Path_) -> str:
    """Human wording of a key path: `[[event]] #2 nadir`, `[patient] baseline_sbp`, `include[1]`."""
    if not path:
        return ""
    head, *rest = path
    if rest and isinstance(rest[0], int):
        tables = head in ("event", "infusion")
        array = f"[[{head}]] #{rest[0] + 1}" if tables else f"{head}[{rest[0] + 1}]"
        return " ".join([array, *map(str, rest[1:])])
    if rest:
        return f"[{head}] " + ".".join(map(str, rest))
    return str(head)


@dataclass(frozen=True)
class Origin:
    """Where a value came from, so problems found later can still point at it."""

    source: str
    line: int | None
    key: str

    def error(self, problem: str) -> ScenarioError:
        return ScenarioError(problem, self.source, self.line, self.key)


class Reader:
    """Checks one parsed file against the schema, raising errors that point into it."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self._index = _LineIndex(text)

    def origin(self, path: Path_) -> Origin:
        return Origin(self.source, self._index.line_of(path), _label(path))

    def fail(self, path: Path_, problem: str) -> ScenarioError:
        return self.origin(path).error(problem)

    def table(self, raw: object, path: Path_) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a table")
        return raw

    def params(
        self, raw: Mapping[str, Any], schema: Mapping[str, Param], path: Path_, ignore: set[str]
    ) -> dict[str, Value]:
        """Checked values for the keys present; defaults for the rest; required ones enforced."""
        out: dict[str, Value] = {}
        for key, value in raw.items():
            if key in ignore:
                continue
            if key not in schema:
                known = ", ".join(sorted(schema)) or "none"
                raise self.fail((*path, key), f"unknown key {key!r} (allowed here: {known})")
            out[key] = self.value(value, schema[key], (*path, key))
        for key, param in schema.items():
            if key in out:
                continue
            if isinstance(param, Number | NibpInterval) and param.required:
                raise self.fail(path, f"missing required key {key!r}")
            if param.default is not None:
                out[key] = param.default
        return out

    def value(self, raw: object, param: Param, path: Path_) -> Value:
        if isinstance(param, Boolean):
            if not isinstance(raw, bool):
                raise self.fail(path, f"must be true or false, got {raw!r}")
            return raw
        if isinstance(param, NibpInterval):
            if raw == "off":
                return "off"
            if _is_number(raw) and raw in AUTO_INTERVALS_MIN:
                return float(raw)
            menu = ", ".join(str(m) for m in AUTO_INTERVALS_MIN)
            raise self.fail(path, f'must be one of the device\'s intervals ({menu} min) or "off"')
        return self.number(raw, param, path)

    def number(self, raw: object, param: Number, path: Path_) -> Draw:
        bounds = f"between {param.low:g} and {param.high:g}"
        if isinstance(raw, list):
            if not param.ranged:
                raise self.fail(path, "must be a single number here, not a range")
            if len(raw) != 2 or not all(_is_number(x) for x in raw):
                raise self.fail(path, "a range must be two numbers, [low, high]")
            low, high = (self._in_bounds(float(x), param, path, bounds) for x in raw)
            if low > high:
                raise self.fail(path, f"range [{low:g}, {high:g}] runs backwards")
            return (low, high)
        if not _is_number(raw):
            shape = "a number or a range [low, high]" if param.ranged else "a number"
            raise self.fail(path, f"must be {shape}, got {raw!r}")
        return self._in_bounds(float(raw), param, path, bounds)

    def _in_bounds(self, value: float, param: Number, path: Path_, bounds: str) -> float:
        if not param.low <= value <= param.high:
            raise self.fail(path, f"must be {bounds}, got {value:g}")
        if param.whole and value != int(value):
            raise self.fail(path, f"must be a whole number, got {value:g}")
        return value


def _is_number(raw: object) -> TypeGuard[int | float]:
    return isinstance(raw, int | float) and not isinstance(raw, bool)
