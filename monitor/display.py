"""How alarms and values are shown: alarm levels, their order and colours, and freshness.

The nurse station (through the snapshot the server sends), the review figures and the
printed report all read these; none keeps a copy.

IEC 60601-1-8 colours: high priority red, medium yellow, low cyan or yellow. Vigil shows
low yellow and keeps cyan for technical alarms, which the station sounds and sorts as a
level of their own between low and medium. CRISIS is shown as high (it also escalates).
"""

from __future__ import annotations

import enum

from monitor.protocol import PRIORITIES, AlarmKind, Phase, Priority, Protocol, TechnicalKind
from monitor.vitals import VITALS, Vital


class AlarmLevel(enum.StrEnum):
    """What a screen shows and sounds for an alarm, least urgent first."""

    LOW = "low"
    TECHNICAL = "technical"
    MEDIUM = "medium"
    HIGH = "high"


ALARM_LEVELS: tuple[AlarmLevel, ...] = tuple(AlarmLevel)

# The level a physiological alarm of each priority is shown at.
PRIORITY_LEVEL: dict[Priority, AlarmLevel] = {
    Priority.LOW: AlarmLevel.LOW,
    Priority.MEDIUM: AlarmLevel.MEDIUM,
    Priority.HIGH: AlarmLevel.HIGH,
    Priority.CRISIS: AlarmLevel.HIGH,
}

LEVEL_COLOURS: dict[AlarmLevel, str] = {
    AlarmLevel.HIGH: "#f85149",  # red
    AlarmLevel.MEDIUM: "#e3b341",  # yellow
    AlarmLevel.LOW: "#e3b341",  # yellow, steady (it does not flash)
    AlarmLevel.TECHNICAL: "#39c5cf",  # cyan
}

# The one priority colour map: figures, reports and the station's chair view use it.
PRIORITY_COLOURS: dict[Priority, str] = {p: LEVEL_COLOURS[PRIORITY_LEVEL[p]] for p in PRIORITIES}

# Priorities shown at the high level ("high priority alarms" in counts and filters).
HIGH_LEVEL_PRIORITIES: tuple[Priority, ...] = tuple(
    p for p in PRIORITIES if PRIORITY_LEVEL[p] is AlarmLevel.HIGH
)


def alarm_level(kind: AlarmKind, priority: Priority) -> AlarmLevel:
    """The level an alarm is shown and sounded at."""
    return AlarmLevel.TECHNICAL if kind is AlarmKind.TECHNICAL else PRIORITY_LEVEL[priority]


# A continuous vital (about 1 Hz) older than this is not live: an oximeter holds its last
# value about 10 s when the probe comes off, then sends nothing.
CONTINUOUS_FRESH_S = 10.0
# An NIBP reading when the phase sets no cuff interval (check-in, or no session).
EPISODIC_FRESH_S = 20 * 60.0


def fresh_s(protocol: Protocol, vital: Vital, phase: Phase | None) -> float:
    """How old a value may be before it is shown stale, by the vital's kind and the phase.

    An NIBP reading stays fresh for the phase's cuff interval plus the `nibp_stale` check's
    grace: the moment the protocol calls it stale.
    """
    if not VITALS[vital].episodic:
        return CONTINUOUS_FRESH_S
    interval = protocol.nibp_interval(phase) if phase is not None else 0.0
    if interval <= 0:
        return EPISODIC_FRESH_S
    stale = protocol.technical_check(TechnicalKind.NIBP_STALE)
    return interval + (stale.grace_s if stale is not None else 0.0)
