"""The event-loop stall of a full garbage collection in a Vigil server, with and without
freezing what start-up built (`vigil serve` and `vigil demo` freeze it, vigil/cli.py).

A full (generation 2) collection walks every container object the process tracks. It runs
on the thread that triggers it, here the event loop, so every live feed and ingest waits.
This builds the same application `vigil serve` runs, on a scratch SQLite database, and
times `gc.collect()` before and after `gc.freeze()`, in the same process.

    python bench/bench_gc_pause.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime

LATER_OBJECTS = 50_000


def full_collection_ms() -> float:
    started = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["VIGIL_DATABASE_URL"] = f"sqlite:///{scratch}/vigil.sqlite"
        from app.settings import Settings
        from vigil.server import create_server

        app = create_server(Settings())
        tracked = len(gc.get_objects())
        before = [full_collection_ms() for _ in range(args.repeat)]
        gc.freeze()
        frozen = gc.get_freeze_count()
        # What the server builds afterwards is still walked: stand in for a running
        # server's state with 50,000 live containers made after the freeze.
        later = [{"chair": i, "values": [float(i)]} for i in range(LATER_OBJECTS // 2)]
        after = [full_collection_ms() for _ in range(args.repeat)]
        del app, later
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}")
    print(f"objects tracked after start-up: {tracked:,}; frozen: {frozen:,}")
    base, frozen_ms = statistics.median(before), statistics.median(after)
    print(f"full collection, not frozen: median {base:.1f} ms (max {max(before):.1f})")
    print(
        f"full collection, frozen, {LATER_OBJECTS:,} objects made since: "
        f"median {frozen_ms:.2f} ms (max {max(after):.2f})"
    )
    print(f"ratio frozen / not frozen: {frozen_ms / base:.4f}")


if __name__ == "__main__":
    main()
