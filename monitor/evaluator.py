"""The numpy alarm evaluator: state as (sessions x rules) arrays, one vectorised pass per batch.

Semantics are those of `monitor.conditions` and the scalar `monitor.reference`, which the
property tests hold this module to. How a batch is vectorised:

* Samples are grouped by vital; the perfusion index goes first because its low-signal state
  gates SpO2 and PR samples (looked up "as of" each gated sample's time).
* Within a vital, a batch with at most one sample per session is one *layer*: every array
  operation covers all sessions at once. Several samples of one vital for one session (a
  gateway's backlog, say) are split into layers by their rank in time, so each layer still
  touches each session once and the per-session order is kept. At 1 Hz there is one layer.
* Rules are stored per vital as (sessions x rules-of-that-vital) blocks. Per-session state
  that is indexed by vital or technical check is stored (vital, session) so that one vital's
  column is a contiguous array.
* Fast path: most samples are well inside every limit with nothing pending. For each
  (vital, session) the evaluator keeps the open band (safe_lo, safe_hi) in which no rule's
  condition holds, and whether any rule is pending or active ("busy"). A usable sample inside
  the band of a quiet vital cannot change rule state, so only the others are evaluated.

No Python loop runs per sample; Python loops run per vital, per layer and per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from monitor.conditions import (
    N_VITALS,
    VITAL_INDEX,
    VITALS_ORDER,
    ConditionEvent,
    SampleBatch,
    sample_usable,
    tick_check_order,
    untrusted_mask,
)
from monitor.protocol import PHASE_INDEX, PHASES, Phase, Protocol, TechnicalKind
from monitor.vitals import VITALS, SampleQuality, Vital

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Bool = NDArray[np.bool_]
Index = I64 | slice

NAN = np.nan
_UNBOUND = int(SampleQuality.UNBOUND)
_CUFF = int(SampleQuality.CUFF_INFLATING)
_PROBE_OFF = int(SampleQuality.PROBE_OFF)
_BASELINE_PHASE = PHASE_INDEX[Phase.BASELINE]
_NIBP_SYS = VITAL_INDEX[Vital.NIBP_SYS]

_T = TypeVar("_T", bound=np.generic)


def _grow(array: NDArray[_T], capacity: int, fill: object, axis: int) -> NDArray[_T]:
    """The array with its session axis extended to `capacity`, new entries `fill`."""
    shape = list(array.shape)
    old, shape[axis] = shape[axis], capacity
    grown = np.full(shape, fill, dtype=array.dtype)
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, old)
    grown[tuple(index)] = array
    return grown


@dataclass
class _Gate:
    """What gated samples in a batch need to know about the batch's perfusion index samples."""

    before: Bool | None = None  # low-signal state before the batch
    time: F64 | None = None  # per session: time of its one PI sample (unlayered batches)
    seen: tuple[I64, F64, Bool] | None = None  # layered: PI session, time, state after


@dataclass
class _Block:
    """The rules of one vital: constants per rule, state per (session, rule)."""

    vital: int
    rules: I64  # protocol rule indices
    sign: F64  # +1 upper limit, -1 lower limit: compare sign*value with sign*limit
    strict: Bool
    hysteresis: F64
    delay: F64
    confirm: F64  # NaN: no confirmation
    is_confirm: Bool
    relative: Bool
    applies: Bool  # (phases, rules)
    any_relative: bool
    any_confirm: bool
    all_strict: bool
    none_strict: bool
    limit: F64  # (sessions, rules): absolute limit, or offset from baseline
    onset: F64  # (sessions, rules): NaN when not pending
    active: Bool  # (sessions, rules)


def _block(protocol: Protocol, vi: int, capacity: int) -> _Block | None:
    idx = [i for i, r in enumerate(protocol.rules) if r.vital is VITALS_ORDER[vi]]
    if not idx:
        return None
    rules = [protocol.rules[i] for i in idx]
    strict = np.array([r.op.strict for r in rules])
    confirm = np.array([NAN if r.confirm_within_s is None else r.confirm_within_s for r in rules])
    relative = np.array([r.relative_to_baseline for r in rules])
    return _Block(
        vital=vi,
        rules=np.array(idx, dtype=np.int64),
        sign=np.array([1.0 if r.op.is_upper else -1.0 for r in rules]),
        strict=strict,
        hysteresis=np.array([r.hysteresis for r in rules]),
        delay=np.array([r.delay_s for r in rules]),
        confirm=confirm,
        is_confirm=~np.isnan(confirm),
        relative=relative,
        applies=np.array([[p in r.phases for r in rules] for p in PHASES]),
        any_relative=bool(relative.any()),
        any_confirm=bool((~np.isnan(confirm)).any()),
        all_strict=bool(strict.all()),
        none_strict=not strict.any(),
        limit=np.tile(np.array([r.limit for r in rules]), (capacity, 1)),
        onset=np.full((capacity, len(rules)), NAN),
        active=np.zeros((capacity, len(rules)), dtype=bool),
    )


class VectorEvaluator:
    """Numpy implementation of `monitor.conditions.Evaluator`."""

    def __init__(self, protocol: Protocol, capacity: int = 64) -> None:
        self.protocol = protocol
        self._n_rules = len(protocol.rules)
        n_tech = len(protocol.technical)
        cap = self._cap = max(1, capacity)
        self._blocks: dict[int, _Block] = {}
        for vi in range(N_VITALS):
            block = _block(protocol, vi, cap)
            if block is not None:
                self._blocks[vi] = block
        self._default_limits = np.array([r.limit for r in protocol.rules])
        self._untrusted = np.array([untrusted_mask(protocol, v) for v in VITALS_ORDER])
        self._gated = [v in protocol.gated_vitals for v in VITALS_ORDER]
        self._episodic = [VITALS[v].episodic for v in VITALS_ORDER]
        self._tech_applies = np.array(
            [[p in c.phases for p in PHASES] for c in protocol.technical], dtype=bool
        ).reshape(n_tech, len(PHASES))
        self._tick_order = tick_check_order(protocol)
        tech_index = {c.id: j for j, c in enumerate(protocol.technical)}
        self._suppressors = [[tech_index[o] for o in c.suppressed_by] for c in protocol.technical]
        self._phase_interval = np.array([protocol.nibp_interval(p) for p in PHASES])
        self._low_j, self._low_vi = self._find(TechnicalKind.LOW_SIGNAL)
        self._probe_j, self._probe_vi = self._find(TechnicalKind.PROBE_OFF)
        self._failed_j, _ = self._find(TechnicalKind.NIBP_FAILED)
        self._vital_order = list(range(N_VITALS))
        if self._low_vi >= 0:  # the perfusion index first: it gates other vitals
            self._vital_order.remove(self._low_vi)
            self._vital_order.insert(0, self._low_vi)
        n_base = protocol.baseline_readings

        # Per session.
        self._live = np.zeros(cap, dtype=bool)
        self._phase = np.zeros(cap, dtype=np.int64)
        self._last_any = np.full(cap, -np.inf)
        self._explicit_interval = np.full(cap, NAN)  # NaN: the phase's default
        self._interval = np.zeros(cap)  # effective NIBP interval
        self._failures = np.zeros(cap, dtype=np.int64)
        self._low_signal = np.zeros(cap, dtype=bool)
        self._probe_off = np.zeros(cap, dtype=bool)
        self._stamp = np.zeros(cap, dtype=np.int64)  # scratch for duplicate detection
        # Per (vital, session).
        self._explicit_base = np.full((N_VITALS, cap), NAN)
        self._base_slots = np.full((N_VITALS, n_base, cap), NAN)
        self._base_count = np.zeros((N_VITALS, cap), dtype=np.int64)
        self._last_usable = np.full((N_VITALS, cap), -np.inf)
        self._cuff_until = np.full((N_VITALS, cap), -np.inf)  # absence explained by the cuff
        self._pair_stamp = np.zeros((N_VITALS, cap), dtype=np.int64)  # repeat detection
        self._last_time = np.full((N_VITALS, cap), NAN)  # of the vital's last sample
        self._last_measured = np.full((N_VITALS, cap), NAN)
        self._safe_lo = np.full((N_VITALS, cap), np.inf)  # the band where no rule holds
        self._safe_hi = np.full((N_VITALS, cap), -np.inf)
        self._busy = np.zeros((N_VITALS, cap), dtype=bool)
        self._quiet_lo = np.full((N_VITALS, cap), np.inf)  # the band, or empty when busy
        self._quiet_hi = np.full((N_VITALS, cap), -np.inf)
        # Per (technical check, session).
        self._tech_active = np.zeros((n_tech, cap), dtype=bool)
        self._tech_app = np.zeros((n_tech, cap), dtype=bool)  # applies in the current phase
        self._armed = np.zeros((n_tech, cap))  # when the check last became applicable

    def _find(self, kind: TechnicalKind) -> tuple[int, int]:
        for j, check in enumerate(self.protocol.technical):
            if check.kind is kind:
                return j, VITAL_INDEX[check.vital] if check.vital is not None else -1
        return -1, -1

    # --- sessions and settings ------------------------------------------------------------

    def _ensure(self, index: int) -> None:
        if index < self._cap:
            return
        cap = max(2 * self._cap, index + 1)
        for b in self._blocks.values():
            b.limit = _grow(b.limit, cap, 0.0, 0)
            b.onset = _grow(b.onset, cap, NAN, 0)
            b.active = _grow(b.active, cap, False, 0)
        self._live = _grow(self._live, cap, False, 0)
        self._phase = _grow(self._phase, cap, 0, 0)
        self._last_any = _grow(self._last_any, cap, -np.inf, 0)
        self._explicit_interval = _grow(self._explicit_interval, cap, NAN, 0)
        self._interval = _grow(self._interval, cap, 0.0, 0)
        self._failures = _grow(self._failures, cap, 0, 0)
        self._low_signal = _grow(self._low_signal, cap, False, 0)
        self._probe_off = _grow(self._probe_off, cap, False, 0)
        self._stamp = _grow(self._stamp, cap, 0, 0)
        self._explicit_base = _grow(self._explicit_base, cap, NAN, 1)
        self._base_slots = _grow(self._base_slots, cap, NAN, 2)
        self._base_count = _grow(self._base_count, cap, 0, 1)
        self._last_usable = _grow(self._last_usable, cap, -np.inf, 1)
        self._cuff_until = _grow(self._cuff_until, cap, -np.inf, 1)
        self._pair_stamp = _grow(self._pair_stamp, cap, 0, 1)
        self._last_time = _grow(self._last_time, cap, NAN, 1)
        self._last_measured = _grow(self._last_measured, cap, NAN, 1)
        self._safe_lo = _grow(self._safe_lo, cap, np.inf, 1)
        self._safe_hi = _grow(self._safe_hi, cap, -np.inf, 1)
        self._busy = _grow(self._busy, cap, False, 1)
        self._quiet_lo = _grow(self._quiet_lo, cap, np.inf, 1)
        self._quiet_hi = _grow(self._quiet_hi, cap, -np.inf, 1)
        self._tech_active = _grow(self._tech_active, cap, False, 1)
        self._tech_app = _grow(self._tech_app, cap, False, 1)
        self._armed = _grow(self._armed, cap, 0.0, 1)
        self._cap = cap

    def add_session(self, index: int, phase: Phase, time: float) -> None:
        self._ensure(index)
        i = index
        for b in self._blocks.values():
            b.limit[i] = self._default_limits[b.rules]
            b.onset[i] = NAN
            b.active[i] = False
        self._live[i] = True
        self._phase[i] = PHASE_INDEX[phase]
        self._last_any[i] = -np.inf
        self._explicit_interval[i] = NAN
        self._failures[i] = 0
        self._low_signal[i] = False
        self._probe_off[i] = False
        self._explicit_base[:, i] = NAN
        self._base_slots[:, :, i] = NAN
        self._base_count[:, i] = 0
        self._last_usable[:, i] = -np.inf
        self._cuff_until[:, i] = -np.inf
        self._last_time[:, i] = NAN
        self._last_measured[:, i] = NAN
        self._busy[:, i] = False
        self._tech_active[:, i] = False
        self._armed[:, i] = time
        self._phase_changed(i)

    def _phase_changed(self, i: int) -> None:
        """Refresh what depends on the phase: applicability, NIBP interval, safe bands."""
        phase = int(self._phase[i])
        self._tech_app[:, i] = self._tech_applies[:, phase]
        explicit = self._explicit_interval[i]
        self._interval[i] = self._phase_interval[phase] if np.isnan(explicit) else explicit
        self._refresh_safe(np.array([i]))

    def remove_session(self, index: int) -> None:
        if 0 <= index < self._cap:
            self._live[index] = False
            self._tech_active[:, index] = False
            for b in self._blocks.values():
                b.active[index] = False

    def set_limit(self, index: int, rule: int, limit: float) -> None:
        block = self._blocks[VITAL_INDEX[self.protocol.rules[rule].vital]]
        k = int(np.flatnonzero(block.rules == rule)[0])
        block.limit[index, k] = limit
        self._refresh_safe(np.array([index]), block.vital)

    def set_baseline(self, index: int, vital: Vital, value: float | None) -> None:
        self._explicit_base[VITAL_INDEX[vital], index] = NAN if value is None else value
        self._refresh_safe(np.array([index]), VITAL_INDEX[vital])

    def baseline(self, index: int, vital: Vital) -> float | None:
        value = float(self._baselines(np.array([index]), VITAL_INDEX[vital])[0])
        return None if np.isnan(value) else value

    def set_nibp_interval(self, index: int, seconds: float | None) -> None:
        self._explicit_interval[index] = NAN if seconds is None else seconds
        self._phase_changed(index)

    def set_phase(self, index: int, phase: Phase, time: float) -> list[ConditionEvent]:
        i, new = index, PHASE_INDEX[phase]
        old = int(self._phase[i])
        self._phase[i] = new
        events: list[ConditionEvent] = []
        for vi, b in self._blocks.items():
            for k in np.flatnonzero(~b.applies[new]):
                if b.active[i, k]:
                    events.append(ConditionEvent(i, int(b.rules[k]), False, time, NAN, NAN))
                b.active[i, k] = False
                b.onset[i, k] = NAN
            self._busy[vi, i] = b.active[i].any() or not np.isnan(b.onset[i]).all()
        for j, check in enumerate(self.protocol.technical):
            applies = bool(self._tech_applies[j, new])
            if applies and not self._tech_applies[j, old]:
                self._armed[j, i] = time
            if check.tick_driven:
                want = bool(self._tech_active[j, i]) and applies
            else:
                want = self._technical_state(i, j) and applies
            if want != self._tech_active[j, i]:
                self._tech_active[j, i] = want
                events.append(ConditionEvent(i, self._n_rules + j, want, time, NAN, NAN))
        self._phase_changed(i)
        return events

    def _technical_state(self, i: int, j: int) -> bool:
        if j == self._low_j:
            return bool(self._low_signal[i])
        if j == self._probe_j:
            return bool(self._probe_off[i])
        return bool(self._failures[i] >= self.protocol.technical[j].consecutive)

    def restore_condition(self, index: int, check: int) -> None:
        """Mark a condition active again after a restart (its alarm was restored)."""
        i = index
        if check < self._n_rules:
            b = self._blocks[VITAL_INDEX[self.protocol.rules[check].vital]]
            k = int(np.flatnonzero(b.rules == check)[0])
            b.active[i, k] = True
            b.onset[i, k] = NAN
            self._busy[b.vital, i] = True
            self._quiet_lo[b.vital, i], self._quiet_hi[b.vital, i] = np.inf, -np.inf
            return
        j = check - self._n_rules
        if j == self._low_j:
            self._low_signal[i] = True
        elif j == self._probe_j:
            self._probe_off[i] = True
        elif j == self._failed_j:
            consecutive = self.protocol.technical[j].consecutive
            self._failures[i] = max(int(self._failures[i]), consecutive)
        else:
            self._armed[j, i] = -np.inf  # the restart must not restart its clock
        self._tech_active[j, i] = True

    def nibp_failure(self, index: int, time: float) -> list[ConditionEvent]:
        """A failed NIBP cuff cycle, reported by the server."""
        self._failures[index] += 1
        events: list[ConditionEvent] = []
        if self._failed_j >= 0:
            rows = np.array([index])
            failures = self._failures[rows]
            consecutive = self.protocol.technical[self._failed_j].consecutive
            self._set_technical(
                self._failed_j,
                rows,
                failures >= consecutive,
                np.array([time]),
                failures.astype(np.float64),
                float(consecutive),
                events,
            )
        return events

    # --- samples --------------------------------------------------------------------------

    def ingest(self, batch: SampleBatch) -> list[ConditionEvent]:
        s, v, x, t, q = batch.session, batch.vital, batch.value, batch.time, batch.quality
        events: list[ConditionEvent] = []
        if len(s) == 0:
            return events
        if s.min() < 0 or s.max() >= self._cap:
            keep = np.take(self._live, s, mode="clip") & (s >= 0) & (s < self._cap)
        else:
            keep = self._live[s]
        if (q & _UNBOUND).any():
            keep &= (q & _UNBOUND) == 0
        m = batch.measured
        if not keep.all():
            s, v, x, t, q, m = s[keep], v[keep], x[keep], t[keep], q[keep], m[keep]
            if len(s) == 0:
                return events
        # Does any session send one vital twice? Then that vital is applied in layers.
        positions = np.arange(len(s))
        pairs = self._pair_stamp.reshape(-1)
        flat = v * self._cap + s
        pairs[flat] = positions
        repeats = bool((pairs[flat] != positions).any())
        duplicate = self._duplicates(flat, t, m, repeats)
        if duplicate.any():  # the same measurement again: not a sample at all
            keep = ~duplicate
            s, v, x, t, q = s[keep], v[keep], x[keep], t[keep], q[keep]
            if len(s) == 0:
                return events
        np.maximum.at(self._last_any, s, t)  # device-silent clock: order does not matter
        usable = sample_usable(x, q, self._untrusted[v])
        present = np.bincount(v, minlength=N_VITALS)
        gate = _Gate()
        for vi in self._vital_order:
            count = int(present[vi])
            if not count:
                continue
            sel: Index = slice(None)
            if count < len(v):
                idx = np.flatnonzero(v == vi)
                contiguous = int(idx[-1]) - int(idx[0]) + 1 == count
                sel = slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx
            self._vital(vi, s[sel], x[sel], t[sel], q[sel], usable[sel], repeats, gate, events)
        return events

    def _duplicates(self, flat: I64, t: F64, m: F64, repeats: bool) -> Bool:
        """Samples that share their time or their measurement time with the sample of their
        session and vital just before them (in processing order: time, then input order);
        remembers each (vital, session)'s last sample for the next batch."""
        last_t = self._last_time.reshape(-1)
        last_m = self._last_measured.reshape(-1)
        if not repeats:  # one sample per (vital, session): compare with the stored one
            duplicate: Bool = (t == last_t[flat]) | (m == last_m[flat])
            last_t[flat], last_m[flat] = t, m
            return duplicate
        # By (vital, session), then time, then input order; each sample against the one
        # before it in its group, the first against the stored one.
        n = len(flat)
        o = np.lexsort((np.arange(n), t, flat))
        fo, to, mo = flat[o], t[o], m[o]
        first = np.ones(n, dtype=bool)
        first[1:] = fo[1:] != fo[:-1]
        before_t, before_m = np.empty(n), np.empty(n)
        before_t[1:], before_m[1:] = to[:-1], mo[:-1]
        before_t[first], before_m[first] = last_t[fo[first]], last_m[fo[first]]
        duplicate = np.empty(n, dtype=bool)
        duplicate[o] = (to == before_t) | (mo == before_m)
        final = np.ones(n, dtype=bool)
        final[:-1] = first[1:]
        last_t[fo[final]], last_m[fo[final]] = to[final], mo[final]
        return duplicate

    def _vital(
        self,
        vi: int,
        s: I64,
        x: F64,
        t: F64,
        q: I64,
        usable: Bool,
        repeats: bool,
        gate: _Gate,
        events: list[ConditionEvent],
    ) -> None:
        """Apply one vital's samples from a batch, in layers if a session has several."""
        if self._gated[vi] and self._low_j >= 0:
            usable = usable & ~self._low_at(s, t, gate)
        pi = vi == self._low_vi
        if pi:
            gate.before = self._low_signal.copy()
        if repeats:  # somewhere in the batch; is it this vital? (a repeat overwrites its stamp)
            positions = np.arange(len(s))
            self._stamp[s] = positions
            repeats = bool((self._stamp[s] != positions).any())
        if not repeats:
            self._layer(vi, s, x, t, q, usable, events)
            if pi:
                gate.time = np.full(self._cap, np.inf)
                gate.time[s] = t
            return
        layers = self._layers(s, t)
        after: list[Bool] = []
        for layer in layers:
            rows = s[layer]
            self._layer(vi, rows, x[layer], t[layer], q[layer], usable[layer], events)
            if pi:
                after.append(self._low_signal[rows])
        if pi:
            # The state after each PI sample, in processing order, for as-of lookups.
            joined = np.concatenate(layers)
            gate.seen = (s[joined], t[joined], np.concatenate(after))

    @staticmethod
    def _layers(sessions: I64, times: F64) -> list[I64]:
        """Split samples into layers: the k-th sample (in time order) of each session."""
        o = np.argsort(times, kind="stable")
        o = o[np.argsort(sessions[o], kind="stable")]
        ordered = sessions[o]
        n = len(o)
        starts = np.ones(n, dtype=bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        positions = np.arange(n)
        rank = positions - np.maximum.accumulate(np.where(starts, positions, 0))
        return [o[rank == k] for k in range(int(rank.max()) + 1)]

    def _low_at(self, sessions: I64, times: F64, gate: _Gate) -> Bool:
        """The low-signal state each gated sample saw: after the last PI sample at or before it."""
        before = gate.before
        if before is None:  # no PI samples in this batch
            return self._low_signal[sessions]
        if gate.time is not None:  # at most one PI sample per session: its state is current
            seen = gate.time[sessions] <= times
            return np.where(seen, self._low_signal[sessions], before[sessions])
        assert gate.seen is not None
        pi_s, pi_t, pi_state = gate.seen
        n_pi = len(pi_s)
        all_s = np.concatenate((pi_s, sessions))
        all_t = np.concatenate((pi_t, times))
        kind = np.concatenate((np.zeros(n_pi, dtype=np.int64), np.ones(len(sessions), np.int64)))
        # By session, then time, PI before the gated sample at the same time; stable, so PI
        # samples keep their processing order and the last one before a sample is the latest.
        o = np.lexsort((kind, all_t, all_s))
        is_pi = o < n_pi
        positions = np.arange(len(o))
        last_pi = np.maximum.accumulate(np.where(is_pi, positions, -1))
        gated_pos = positions[~is_pi]
        lp = last_pi[gated_pos]
        source = o[np.maximum(lp, 0)]
        owner = all_s[o[gated_pos]]
        found = (lp >= 0) & (all_s[source] == owner)
        state = np.where(found, pi_state[np.minimum(source, n_pi - 1)], before[owner])
        result = np.empty(len(sessions), dtype=bool)
        result[o[gated_pos] - n_pi] = state
        return result

    def _layer(
        self, vi: int, rows: I64, x: F64, t: F64, q: I64, usable: Bool, events: list[ConditionEvent]
    ) -> None:
        """Apply samples of one vital, at most one per session."""
        all_usable = bool(usable.all())
        if all_usable:
            ru, tu, xu = rows, t, x
        else:
            keep = np.flatnonzero(usable)
            ru, tu, xu = rows[keep], t[keep], x[keep]
            cuff = np.flatnonzero(~usable & ((q & _CUFF) != 0))
            if len(cuff):  # the cuff on this arm explains the vital's absence for a while
                rc, until = rows[cuff], self._cuff_until[vi]
                until[rc] = np.maximum(until[rc], t[cuff] + self.protocol.cuff_hold_s)
        if len(ru):
            last = self._last_usable[vi]
            last[ru] = np.maximum(last[ru], tu)

        if vi == self._low_vi and len(ru):
            check = self.protocol.technical[self._low_j]
            limit = np.where(self._low_signal[ru], check.limit + check.hysteresis, check.limit)
            state = xu <= limit
            self._low_signal[ru] = state
            self._set_technical(self._low_j, ru, state, tu, xu, check.limit, events)
        if vi == self._probe_vi:
            state = (q & _PROBE_OFF) != 0
            self._probe_off[rows] = state
            self._set_technical(self._probe_j, rows, state, t, None, NAN, events)
        if vi == _NIBP_SYS and self._failed_j >= 0 and len(ru):
            self._failures[ru] = 0
            consecutive = float(self.protocol.technical[self._failed_j].consecutive)
            zeros = np.zeros(len(ru))
            self._set_technical(
                self._failed_j, ru, zeros.astype(bool), tu, zeros, consecutive, events
            )

        block = self._blocks.get(vi)
        if block is not None and len(ru):
            near = (xu <= self._quiet_lo[vi][ru]) | (xu >= self._quiet_hi[vi][ru])
            if near.all():
                self._rules(block, ru, xu, tu, events)
            elif near.any():
                pick = np.flatnonzero(near)
                self._rules(block, ru[pick], xu[pick], tu[pick], events)
        if self._episodic[vi] and len(ru):
            in_baseline = np.flatnonzero(self._phase[ru] == _BASELINE_PHASE)
            if len(in_baseline):
                rb = ru[in_baseline]
                count = self._base_count[vi, rb]
                slots = self._base_slots[vi]
                slots[count % self.protocol.baseline_readings, rb] = xu[in_baseline]
                self._base_count[vi, rb] = count + 1
                if vi in self._blocks:
                    self._refresh_safe(rb, vi)

    def _rules(self, b: _Block, rows: I64, x: F64, t: F64, events: list[ConditionEvent]) -> None:
        """Evaluate one vital's rules on usable samples, one per session."""
        limit = self._limits(b, rows)
        applies = b.applies[self._phase[rows]]
        if b.any_relative:
            applies &= ~np.isnan(limit)
        active = b.active[rows]
        onset = b.onset[rows]
        # sign * value vs sign * limit turns every operator into > or >=; negation is exact,
        # so decisions match the reference's plain comparisons bit for bit.
        sv = b.sign * x[:, None]
        sl = b.sign * limit
        scl = sl - b.hysteresis
        if b.all_strict:
            bad, still = sv > sl, sv > scl
        elif b.none_strict:
            bad, still = sv >= sl, sv >= scl
        else:
            bad = np.where(b.strict, sv > sl, sv >= sl)
            still = np.where(b.strict, sv > scl, sv >= scl)
        clear = applies & active & ~still
        idle = applies & ~active
        pending = idle & bad
        tt = t[:, None]
        no_onset = np.isnan(onset)
        new_onset = np.where(pending & no_onset, tt, onset)
        fire = pending & (tt - new_onset >= b.delay)
        if b.any_confirm:
            # The next scheduled reading (interval + margin) or an explicit repeat confirms
            # (`Protocol.confirm_window`); with no schedule only the explicit repeat.
            interval = self._interval[rows][:, None]
            margin = self.protocol.nibp_confirm_margin_s
            window = np.where(interval > 0, np.maximum(b.confirm, interval + margin), b.confirm)
            prior = ~no_onset & (tt - onset <= window)
            fire = np.where(b.is_confirm, pending & prior, fire)
            new_onset = np.where(b.is_confirm & pending & ~prior, tt, new_onset)
        new_onset = np.where((idle & ~bad) | fire | clear, NAN, new_onset)
        b.onset[rows] = new_onset
        changed = fire | clear
        any_change = bool(changed.any())
        now_active = (active | fire) & ~clear if any_change else active
        busy = now_active.any(axis=1) | ~np.isnan(new_onset).all(axis=1)
        self._busy[b.vital][rows] = busy
        self._quiet_lo[b.vital][rows] = np.where(busy, np.inf, self._safe_lo[b.vital][rows])
        self._quiet_hi[b.vital][rows] = np.where(busy, -np.inf, self._safe_hi[b.vital][rows])
        if not any_change:
            return
        b.active[rows] = now_active
        for r, k in zip(*np.nonzero(changed), strict=True):
            events.append(
                ConditionEvent(
                    int(rows[r]),
                    int(b.rules[k]),
                    bool(fire[r, k]),
                    float(t[r]),
                    float(x[r]),
                    float(limit[r, k]),
                )
            )

    def _limits(self, b: _Block, rows: I64) -> F64:
        """Effective limits (sessions x rules): baseline + offset for relative rules."""
        limit = b.limit[rows]
        if b.any_relative:
            base = self._baselines(rows, b.vital)
            limit = np.where(b.relative, base[:, None] + limit, limit)
        return limit

    def _refresh_safe(self, rows: I64, only: int | None = None) -> None:
        """Recompute the band in which a sample can change no rule state (see module doc).

        It uses the very limits `_rules` compares with, so "inside" implies "no rule holds".
        """
        for vi, b in self._blocks.items():
            if only is not None and vi != only:
                continue
            limit = self._limits(b, rows)
            applies = b.applies[self._phase[rows]] & ~np.isnan(limit)
            upper = b.sign > 0
            hi = np.where(applies & upper, limit, np.inf).min(axis=1)
            lo = np.where(applies & ~upper, limit, -np.inf).max(axis=1)
            self._safe_hi[vi][rows], self._safe_lo[vi][rows] = hi, lo
            busy = self._busy[vi][rows]
            self._quiet_hi[vi][rows] = np.where(busy, -np.inf, hi)
            self._quiet_lo[vi][rows] = np.where(busy, np.inf, lo)

    def _baselines(self, rows: I64, vi: int) -> F64:
        """Effective baseline per row: the explicit one, else the mean of the last readings."""
        n = self.protocol.baseline_readings
        slots = self._base_slots[vi]
        total = slots[0][rows]
        for k in range(1, n):  # slot order, like the reference
            total = total + slots[k][rows]
        auto = np.where(self._base_count[vi][rows] >= n, total / n, NAN)
        explicit = self._explicit_base[vi][rows]
        return np.where(np.isnan(explicit), auto, explicit)

    def _set_technical(
        self,
        j: int,
        rows: I64,
        state: Bool,
        t: F64,
        value: F64 | None,
        limit: float,
        events: list[ConditionEvent],
    ) -> None:
        """A sample-driven technical alarm is its state while its check applies."""
        active = self._tech_active[j]
        current = active[rows]
        if not state.any() and not current.any():
            return  # the common case: nothing wrong before or now
        want = state & self._tech_app[j][rows]
        changed = np.flatnonzero(want != current)
        if not len(changed):
            return
        active[rows[changed]] = want[changed]
        check = self._n_rules + j
        for r in changed:
            events.append(
                ConditionEvent(
                    int(rows[r]),
                    check,
                    bool(want[r]),
                    float(t[r]),
                    NAN if value is None else float(value[r]),
                    limit,
                )
            )

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[ConditionEvent]:
        events: list[ConditionEvent] = []
        for j in self._tick_order:
            check = self.protocol.technical[j]
            window: F64 | float
            if check.kind is TechnicalKind.DEVICE_SILENT:
                last, window, enabled = self._last_any, check.window_s, self._live
            elif check.kind is TechnicalKind.NO_VALUE:
                assert check.vital is not None
                vi = VITAL_INDEX[check.vital]
                last = np.maximum(self._last_usable[vi], self._cuff_until[vi])
                window, enabled = check.window_s, self._live
            else:
                last = self._last_usable[_NIBP_SYS]
                window = self._interval + check.grace_s
                enabled = self._live & (self._interval > 0)
            age = now - np.maximum(last, self._armed[j])
            active = enabled & self._tech_app[j] & (age >= window)
            for other in self._suppressors[j]:
                active &= ~self._tech_active[other]
            changed = np.flatnonzero(active != self._tech_active[j])
            if not len(changed):
                continue
            self._tech_active[j] = active
            windows = np.broadcast_to(np.asarray(window, dtype=np.float64), age.shape)
            for i in changed:
                events.append(
                    ConditionEvent(
                        int(i),
                        self._n_rules + j,
                        bool(active[i]),
                        now,
                        float(age[i]),
                        float(windows[i]),
                    )
                )
        return events
