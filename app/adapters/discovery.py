"""Find adapters through Python entry points (group `vigil.adapters`).

A third party adds an adapter by installing a package that declares, in its
pyproject.toml::

    [project.entry-points."vigil.adapters"]
    mydevice = "my_package.adapter:MyDeviceAdapter"

The entry point names a callable taking no arguments (usually the adapter class,
which reads its own VIGIL_* settings) and returning an `Adapter`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from app.adapters.base import Adapter

GROUP = "vigil.adapters"

# Vigil's own adapters, used when the installed metadata does not (yet) declare them,
# e.g. in a checkout installed before the entry points were added.
BUILTIN_ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("mllp", "app.adapters.hl7_mllp:MllpAdapter", GROUP),
    EntryPoint("mqtt", "app.adapters.mqtt:MqttAdapter", GROUP),
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """An adapter that was asked for and could not be created."""

    name: str
    reason: str


def available(installed: Iterable[EntryPoint] | None = None) -> dict[str, EntryPoint]:
    """Adapter entry points by name: the installed ones, over Vigil's built-in defaults."""
    found = {ep.name: ep for ep in BUILTIN_ENTRY_POINTS}
    for ep in entry_points(group=GROUP) if installed is None else installed:
        found[ep.name] = ep
    return found


def load_adapters(
    names: Sequence[str], installed: Iterable[EntryPoint] | None = None
) -> tuple[list[Adapter], list[LoadFailure]]:
    """Create the named adapters; each one that cannot be created is a failure, not an error."""
    known = available(installed)
    adapters: list[Adapter] = []
    failures: list[LoadFailure] = []
    for name in dict.fromkeys(names):  # each name once, in the order given
        ep = known.get(name)
        error: Exception | None = None
        if ep is None:
            reason = f"no adapter named {name!r}; installed: {', '.join(sorted(known)) or 'none'}"
        else:
            try:
                adapter = ep.load()()
            except Exception as exc:
                error = exc
                reason = f"could not be created: {type(exc).__name__}: {exc}"
            else:
                if isinstance(adapter, Adapter):
                    adapter.name = name
                    adapters.append(adapter)
                    continue
                reason = f"{ep.value} returned {type(adapter).__name__}, not an adapter"
        log.error("adapter %s: %s; the server runs without it", name, reason, exc_info=error)
        failures.append(LoadFailure(name, reason))
    return adapters, failures
