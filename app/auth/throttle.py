"""Sign-in throttling that slows a password guesser without locking anyone out.

Three limits, all in memory (one Vigil process serves the clinic; a restart forgets them,
which only ever helps the people signing in):

- per address, over every account: at most `sign_in_rate` attempts (a moving window);
- per account *and* address: after `free_failures` consecutive failures, each further
  attempt from that address waits 1 s, 2 s, 4 s, … up to `max_delay_s`;
- per account, from anywhere: after `account_free_failures` consecutive failures, the
  same progressive wait applies to addresses the account has not signed in from lately,
  so that guessing spread over many addresses is slowed too. Addresses the account did
  sign in from are exempt from this one, so nobody can keep its owner out of it.

Nothing locks: the longest wait is `max_delay_s`, after which one more try is allowed.
Accounts are keyed by the username as typed, whether or not it exists, so the answers
never say which accounts exist.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Entries kept per table; the oldest go first. An attacker spraying usernames is held
# to the per-address rate, so evicting old entries frees no attempts worth having.
MAX_ENTRIES = 50_000
# A run of failures is forgotten after this long without another one.
FORGET_AFTER_S = 15 * 60.0
# How long a successful sign-in makes its address known to the account.
KNOWN_ADDRESS_S = 30 * 24 * 3600.0


@dataclass(slots=True)
class _Run:
    """Consecutive failures and when the last one was."""

    failures: int
    last: float


class _Runs:
    """Failure runs by key, bounded in number, forgotten after a quiet spell."""

    def __init__(self, free: int, max_delay_s: float) -> None:
        self._free = free
        self._max_delay_s = max_delay_s
        self._runs: OrderedDict[tuple[str, ...], _Run] = OrderedDict()

    def wait_s(self, key: tuple[str, ...], now: float) -> float:
        run = self._runs.get(key)
        if run is None or run.failures < self._free:
            return 0.0
        delay = min(self._max_delay_s, 2.0 ** (run.failures - self._free))
        return max(0.0, run.last + delay - now)

    def fail(self, key: tuple[str, ...], now: float) -> None:
        run = self._runs.pop(key, None)
        if run is None or now - run.last > FORGET_AFTER_S:
            run = _Run(0, now)
        run.failures += 1
        run.last = now
        self._runs[key] = run  # most recent last
        while len(self._runs) > MAX_ENTRIES:
            self._runs.popitem(last=False)

    def clear(self, key: tuple[str, ...]) -> None:
        self._runs.pop(key, None)

    def clear_account(self, username: str) -> None:
        for key in [key for key in self._runs if key[0] == username]:
            del self._runs[key]


class SignInThrottle:
    """How long a sign-in attempt must wait, by account and address; see the module."""

    def __init__(
        self,
        *,
        free_failures: int,
        account_free_failures: int,
        max_delay_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pair = _Runs(free_failures, max_delay_s)
        self._account = _Runs(account_free_failures, max_delay_s)
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._clock = clock

    def wait_s(self, username: str, address: str) -> float:
        """Seconds before this address may try this account again; 0: it may now."""
        now = self._clock()
        wait = self._pair.wait_s((username, address), now)
        if not self._is_known(username, address, now):
            wait = max(wait, self._account.wait_s((username,), now))
        return wait

    def failed(self, username: str, address: str) -> None:
        now = self._clock()
        self._pair.fail((username, address), now)
        self._account.fail((username,), now)

    def succeeded(self, username: str, address: str) -> None:
        now = self._clock()
        self._pair.clear((username, address))
        self._account.clear((username,))
        self._known.pop((username, address), None)
        self._known[(username, address)] = now
        while len(self._known) > MAX_ENTRIES:
            self._known.popitem(last=False)

    def forget(self, username: str) -> None:
        """An admin's unlock: every wait on the account ends now."""
        self._pair.clear_account(username)
        self._account.clear((username,))

    def _is_known(self, username: str, address: str, now: float) -> bool:
        since = self._known.get((username, address))
        return since is not None and now - since <= KNOWN_ADDRESS_S
