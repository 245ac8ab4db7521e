"""A progress bar for a `.map` (starmap, for_each) on the caller's terminal: done/total, rate,
failures, elapsed.

Only when stderr is a terminal and the map has MIN_INPUTS inputs or more. The event loop that
gathers the map's outputs moves the bar and draws it (no thread of its own, no call to the
control plane), at most REFRESH times a second; while no output arrives it is drawn once a
second, for its elapsed time. Maps that run at once share one display, a bar each.
"""

import asyncio
import time

from . import terminal

MIN_INPUTS = 2
REFRESH = 10  # draws a second, at most
IDLE_DRAW = 1.0  # seconds between draws while no output arrives


class _Display:
    """The rich Progress the running maps' bars are in, while any is shown."""

    def __init__(self, progress):
        self.progress = progress
        self.bars = 0
        self.drawn = 0.0
        self.loop = asyncio.get_running_loop()
        self.ticker = self.loop.create_task(self._tick())

    def draw(self, now: float, force: bool = False):
        if force or now - self.drawn >= 1 / REFRESH:
            self.drawn = now
            self.progress.refresh()

    async def _tick(self):
        while True:
            await asyncio.sleep(IDLE_DRAW)
            now = time.monotonic()
            if now - self.drawn >= IDLE_DRAW:
                self.draw(now)

    def stop(self):
        try:  # from the loop it runs on, which may be another thread's
            self.loop.call_soon_threadsafe(self.ticker.cancel)
        except RuntimeError:  # that loop is closed: the ticker ended with it
            pass
        self.progress.stop()


_display: _Display | None = None


class MapProgress:
    """The bar of one map: update() as outputs arrive (on the event loop), close() at its end."""

    def __init__(self, name: str):
        self.name = name
        self.enabled = terminal.is_terminal()
        self.task = None
        self.started = time.monotonic()  # for its rate: the map's start

    def update(self, total: int, done: int, failed: int, complete: bool):
        """`total`: the inputs sent so far (all of them once `complete`)."""
        if not self.enabled:
            return
        if self.task is None and (total < MIN_INPUTS or not self._open(total)):
            return
        now = time.monotonic()
        elapsed = now - self.started
        rate = f"{done / elapsed:.1f}/s" if elapsed > 0 else ""
        _display.progress.update(self.task, total=total, completed=done, rate=rate,
                                 more="" if complete else "+", failed=f"{failed} failed" if failed else "")
        _display.draw(now, force=complete and done >= total)

    def close(self):
        global _display
        if self.task is None:
            return
        _display.draw(time.monotonic(), force=True)  # its last figures stay on the terminal
        self.task = None
        _display.bars -= 1
        if _display.bars == 0:
            _display.stop()
            _display = None

    def _open(self, total: int) -> bool:
        global _display
        if _display is None:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            progress = terminal.live_progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[more]}"),
                TextColumn("{task.fields[rate]}"), TextColumn("[red]{task.fields[failed]}"), TimeElapsedColumn(),
                auto_refresh=False)  # drawn by the event loop (_Display.draw): no thread of its own
            if progress is None:  # another live display (a build's) is shown
                self.enabled = False
                return False
            progress.start()
            _display = _Display(progress)
        from rich.markup import escape
        self.task = _display.progress.add_task(escape(f"{self.name}.map"), total=total, rate="", more="", failed="")
        _display.bars += 1
        return True
