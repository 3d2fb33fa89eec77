"""What an evaluator takes in (sample batches) and gives out (condition changes).

Both evaluators, the numpy one (`monitor.evaluator`) and the scalar reference
(`monitor.reference`), implement `Evaluator` with the same semantics:

* Samples are applied per session in time order, perfusion index first among samples of
  one time (an *instant*), whose order otherwise does not matter. A sample that shares its
  time or its measurement time with the previous sample of its session and vital is a
  duplicate and is dropped before anything else (the first received counts), so each vital
  has at most one sample per instant. A sample is *usable* when its value is finite and it carries
  none of the protocol's untrusted flags (``low_perfusion`` is ignored on the perfusion index
  itself: it is what the index measures); samples of a gated vital also need the low-signal
  check to be inactive at that moment. Samples flagged UNBOUND are dropped.
* An unusable sample is *missing*: it neither raises nor clears a physiological condition,
  and a pending condition keeps its onset time across the gap.
* A continuous rule raises on the first usable sample at which its condition has held (on
  every usable sample) for `delay_s`. An NIBP rule is evaluated on each usable reading of its
  vital; with `confirm_within_s` it raises on the second of two consecutive qualifying
  readings at most that far apart. An active condition clears on the first usable sample
  past its limit by the hysteresis.
* Ticks evaluate only the technical checks that depend on time passing (device silent, no
  value, NIBP stale); physiological conditions change only on samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from monitor.protocol import Phase, Protocol, TechnicalKind
from monitor.vitals import SampleQuality, Vital

VITALS_ORDER: tuple[Vital, ...] = tuple(Vital)
VITAL_INDEX: dict[Vital, int] = {vital: i for i, vital in enumerate(VITALS_ORDER)}
N_VITALS = len(VITALS_ORDER)


@dataclass(frozen=True)
class SampleBatch:
    """Samples as parallel arrays: session index, vital index, value, time, quality mask and
    measurement time.

    The session index is the engine's (`AlarmEngine.session_index`); the vital index is the
    position in `Vital` (`VITAL_INDEX`). `time` (epoch seconds) is when the sample counts on
    Vigil's clock, preferably its receive time (see docs/ALARMS.md); `measured` is the
    device's own time of the measurement (default: `time`). A sample that shares its time or
    its measurement time with the previous sample of its session and vital is a duplicate
    (a republished reading, a resent sample) and is ignored: the first received counts.
    """

    session: NDArray[np.int64]
    vital: NDArray[np.int64]
    value: NDArray[np.float64]
    time: NDArray[np.float64]
    quality: NDArray[np.int64]
    measured: NDArray[np.float64]

    @classmethod
    def from_arrays(
        cls,
        session: ArrayLike,
        vital: ArrayLike,
        value: ArrayLike,
        time: ArrayLike,
        quality: ArrayLike | None = None,
        measured: ArrayLike | None = None,
    ) -> SampleBatch:
        s = np.asarray(session, dtype=np.int64).ravel()
        v = np.asarray(vital, dtype=np.int64).ravel()
        x = np.asarray(value, dtype=np.float64).ravel()
        t = np.asarray(time, dtype=np.float64).ravel()
        q = (
            np.zeros(len(s), dtype=np.int64)
            if quality is None
            else np.asarray(quality, dtype=np.int64).ravel()
        )
        m = t if measured is None else np.asarray(measured, dtype=np.float64).ravel()
        if not len(s) == len(v) == len(x) == len(t) == len(q) == len(m):
            raise ValueError("sample arrays must have the same length")
        if len(v) and (v.min() < 0 or v.max() >= N_VITALS):
            raise ValueError(f"vital index out of range 0..{N_VITALS - 1}")
        if not np.isfinite(t).all():
            raise ValueError("sample times must be finite")
        if measured is not None and not np.isfinite(m).all():
            raise ValueError("measurement times must be finite")
        return cls(s, v, x, t, q, m)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> SampleBatch:
        """From (session index, vital, value, time[, quality[, measured]]) rows, the vital as
        a `Vital`, its code ("spo2") or its index; for tests and small batches, not the hot
        path. A row without a measurement time is measured at its time."""
        s: list[int] = []
        v: list[int] = []
        x: list[float] = []
        t: list[float] = []
        q: list[int] = []
        m: list[float] = []
        for row in rows:
            s.append(row[0])
            vital = row[1]
            v.append(VITAL_INDEX[Vital(vital)] if isinstance(vital, str) else int(vital))
            x.append(row[2])
            t.append(row[3])
            q.append(int(row[4]) if len(row) > 4 else 0)
            m.append(row[5] if len(row) > 5 else row[3])
        return cls.from_arrays(s, v, x, t, q, m)

    def __len__(self) -> int:
        return len(self.session)


@dataclass(frozen=True, slots=True)
class ConditionEvent:
    """An alarm condition became active or inactive.

    `check` indexes `Protocol.check_ids` (rules, then technical checks). `value` and `limit`
    are NaN where they do not apply; for a rule `limit` is the effective limit (baseline
    plus offset for a baseline-relative rule).
    """

    session: int
    check: int
    active: bool
    time: float
    value: float
    limit: float


def event_order(event: ConditionEvent) -> tuple[float, int, int]:
    """The canonical order of events; sort stably so one check's events keep their order."""
    return (event.time, event.session, event.check)


class Evaluator(TypingProtocol):
    """Turns samples and time into condition changes for a set of sessions (by index)."""

    def add_session(self, index: int, phase: Phase, time: float) -> None: ...

    def remove_session(self, index: int) -> None: ...

    def set_phase(self, index: int, phase: Phase, time: float) -> list[ConditionEvent]: ...

    def set_limit(self, index: int, rule: int, limit: float) -> None: ...

    def set_baseline(self, index: int, vital: Vital, value: float | None) -> None: ...

    def baseline(self, index: int, vital: Vital) -> float | None: ...

    def set_nibp_interval(self, index: int, seconds: float | None) -> None: ...

    def nibp_failure(self, index: int, time: float) -> list[ConditionEvent]: ...

    def ingest(self, batch: SampleBatch) -> list[ConditionEvent]: ...

    def tick(self, now: float) -> list[ConditionEvent]: ...

    def restore_condition(self, index: int, check: int) -> None: ...


def untrusted_mask(protocol: Protocol, vital: Vital) -> int:
    """Quality bits that make a sample of this vital unusable."""
    mask = int(protocol.untrusted) | int(SampleQuality.UNBOUND)
    low_signal = protocol.technical_check(TechnicalKind.LOW_SIGNAL)
    if low_signal is not None and low_signal.vital is vital:
        mask &= ~int(SampleQuality.LOW_PERFUSION)
    return mask


def sample_usable(
    value: ArrayLike, quality: ArrayLike, untrusted: int | NDArray[np.int64]
) -> NDArray[np.bool_]:
    """The usable-sample predicate, per sample or element-wise: a finite value that carries
    none of the `untrusted` bits (its vital's `untrusted_mask`). Gating by the low-signal
    check is state, not a property of the sample, and is applied on top by the evaluators."""
    usable: NDArray[np.bool_] = np.isfinite(value) & (
        (np.asarray(quality, dtype=np.int64) & untrusted) == 0
    )
    return usable


def tick_check_order(protocol: Protocol) -> Sequence[int]:
    """Tick-driven technical checks (indices into `protocol.technical`), suppressors first."""
    by_id = {c.id: i for i, c in enumerate(protocol.technical)}
    order: list[int] = []
    done: set[int] = set()

    def visit(i: int) -> None:
        if i in done:
            return
        done.add(i)
        for other in protocol.technical[i].suppressed_by:
            visit(by_id[other])
        if protocol.technical[i].tick_driven:
            order.append(i)

    for i in range(len(protocol.technical)):
        visit(i)
    return order
