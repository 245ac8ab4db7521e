"""A progress bar for a `.map` (starmap, for_each) on the caller's terminal: done/total, rate,
failures, elapsed.

Only when stderr is a terminal and the map has MIN_INPUTS inputs or more. The loop that gathers
the map's outputs moves the bar (no thread or call of its own); it is drawn at most REFRESH
times a second. Maps that run at once share one display, a bar each.
"""

import time

from . import terminal

MIN_INPUTS = 2
REFRESH = 10  # redraws a second, at most

_shared = None  # the rich Progress the running maps' bars are in, while any is shown
_bars = 0       # how many


class MapProgress:
    """The bar of one map: update() as outputs arrive, close() at its end."""

    def __init__(self, name: str):
        self.name = name
        self.enabled = terminal.is_terminal()
        self.task = None
        self.progress = None
        self.drawn = 0.0
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
        self.progress.update(self.task, total=total, completed=done, rate=rate,
                             more="" if complete else "+", failed=f"{failed} failed" if failed else "")
        if now - self.drawn >= 1 / REFRESH or (complete and done >= total):
            self.drawn = now
            self.progress.refresh()

    def close(self):
        global _shared, _bars
        if self.task is None:
            return
        self.progress.refresh()  # its last figures stay on the terminal
        self.task = None
        _bars -= 1
        if _bars == 0:
            _shared.stop()
            _shared = None

    def _open(self, total: int) -> bool:
        global _shared, _bars
        if _shared is None:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            _shared = terminal.live_progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[more]}"),
                TextColumn("{task.fields[rate]}"), TextColumn("[red]{task.fields[failed]}"), TimeElapsedColumn(),
                auto_refresh=False)  # drawn by update(): no thread of its own
            if _shared is None:  # another live display (a build's) is shown
                self.enabled = False
                return False
            _shared.start()
        from rich.markup import escape
        self.progress = _shared
        self.task = _shared.add_task(escape(f"{self.name}.map"), total=total, rate="", more="", failed="")
        _bars += 1
        return True
