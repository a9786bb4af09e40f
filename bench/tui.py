"""How responsive is the app while the engine works, and how idle is it when nothing happens?

1. keypress-to-frame latency (p50 / p99) on the dashboard while a verify worker runs at
   full speed (its queue is refilled whenever it empties), app headless at 120x40;
2. CPU time used by the whole process (UI, refresh thread, idle engine threads) over
   `--idle` seconds with nothing to do, from resource.getrusage.

Run by hand: `uv run python bench/tui.py [--files 400] [--presses 200] [--idle 30]`.
The library is the `dmedia-tui demo` sandbox, built in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from textual import events

from dmedia_tui.clock import OffsetClock
from dmedia_tui.config import Config
from dmedia_tui.db import open_library
from dmedia_tui.demo import build_demo
from dmedia_tui.engine import Engine
from dmedia_tui.metastore import MetaStore
from dmedia_tui.tui.app import DmediaApp
from dmedia_tui.tui.widgets.stores import StoresTable


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class FrameCounter:
    """Counts frames the app hands to its driver, with the time of the last one."""

    def __init__(self, app: DmediaApp) -> None:
        self.count = 0
        self.last = 0.0
        original = app._display

        def display(screen, renderable) -> None:
            original(screen, renderable)
            self.count += 1
            self.last = time.perf_counter()

        app._display = display  # type: ignore[method-assign]


def keep_verifying(engine: Engine, store_id: str, stop: threading.Event) -> None:
    """Refill the verify queue so the worker never waits."""
    while not stop.is_set():
        if not engine._priority:
            engine.request_verify(store_id=store_id)
        stop.wait(0.05)


async def latency(ms: MetaStore, presses: int) -> tuple[list[float], int, float, int]:
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    app = DmediaApp(ms, engine)
    stop = threading.Event()
    async with app.run_test(size=(120, 40)) as pilot:
        frames = FrameCounter(app)
        await app.settle()
        table = app.screen.query_one(StoresTable)
        table.focus()
        sid = next(r.store_id for r in table.rows_shown if r.online)
        feeder = threading.Thread(target=keep_verifying, args=(engine, sid, stop), daemon=True)
        feeder.start()
        await pilot.pause(1.0)  # let the worker reach full speed
        samples = []
        seen: set[int] = set()  # one engine Activity object per copy verified
        unsubscribe = engine.subscribe(
            lambda ev: seen.add(id(ev.data)) if ev.kind == "activity" else None
        )
        t_start = time.perf_counter()
        refreshes = app.refreshes
        for i in range(presses):
            before = frames.count
            key = events.Key("down" if i % 2 == 0 else "up", None)
            key.set_sender(app)
            t0 = time.perf_counter()
            # Straight to the driver's queue: Pilot.press would wait for the whole process
            # to go idle, which never happens while a worker hashes.
            app._driver.send_message(key)
            while frames.count == before:
                await asyncio.sleep(0.0005)
            samples.append(frames.last - t0)
        elapsed = time.perf_counter() - t_start
        applied = app.refreshes - refreshes
        stop.set()
        feeder.join()
        rate = statistics.median(list(engine.rates)[-20:]) if engine.rates else 0.0
        unsubscribe()
        verified = len(seen)
        await pilot.press("q")
    del elapsed
    return samples, verified, rate, applied


async def idle_cpu(ms: MetaStore, seconds: float) -> tuple[float, int]:
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    app = DmediaApp(ms, engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.settle()
        await pilot.pause(2.0)  # the engine's first housekeeping round
        refreshes = app.refreshes
        c0, t0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        used, wall = cpu_seconds() - c0, time.monotonic() - t0
        recomputed = app.refreshes - refreshes
        await pilot.press("q")
    return used / wall, recomputed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dmedia-tui-bench-") as tmp:
        now = time.time()
        t0 = time.perf_counter()
        demo = build_demo(Path(tmp) / "demo", now, files=args.files)
        print(
            f"demo library: {len(demo.files)} files, {demo.bytes / 1e6:.1f} MB, "
            f"built in {time.perf_counter() - t0:.1f} s"
        )
        config = Config.load(demo.config_dir, demo.data_dir)
        lib = open_library(str(demo.db_path))
        ms = MetaStore(lib, config, OffsetClock(now))

        samples, verified, rate, applied = asyncio.run(latency(ms, args.presses))
        ms_samples = [s * 1000 for s in samples]
        print(
            f"keypress-to-frame while verifying ({len(samples)} presses, "
            f"{verified} copies verified and {applied} dashboard refreshes applied meanwhile, "
            f"{rate / 1e6:.0f} MB/s):"
        )
        print(
            f"  p50 {percentile(ms_samples, 50):.1f} ms  p99 {percentile(ms_samples, 99):.1f} ms"
            f"  max {max(ms_samples):.1f} ms"
        )

        settle = Engine(ms, watch_drives=False, watch_folders=False)
        settle.run_once()  # nothing left due: the idle phase is really idle
        cpu, recomputed = asyncio.run(idle_cpu(ms, args.idle))
        print(
            f"idle over {args.idle:.0f} s: {cpu * 100:.2f} % of one CPU, "
            f"{recomputed} dashboard recomputations"
        )
        lib.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
