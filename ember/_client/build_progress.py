"""An image build on the caller's terminal: one line per step, its output folded away.

The worker reports each step's start and end (BuildStep); the output between them is that step's.
On a terminal a step shows a spinner and its elapsed time while it runs, then a ✓ with the time
(or "cached"); elsewhere a plain line at its start and at its end. A step's output is shown in
full when it fails, and as it comes when verbose (`-v`, EMBER_VERBOSE=1). Output outside any step
(the control plane waiting for a worker, say) is shown as it comes.
"""

import sys
import time

from ..proto import api_pb2
from . import terminal

Kind = api_pb2.ImageStep.Kind
State = api_pb2.BuildStep.State
LINE_WIDTH = 100  # characters of a step's description on a plain line


def describe(step: api_pb2.ImageStep, source: str = "") -> str:
    """What a step adds, in a few words: the packages, the commands, where local files come from
    (`source`, which only the caller's machine knows)."""
    args = list(step.args)
    if step.kind == Kind.DEBIAN_SLIM:
        return f"debian_slim python {args[1] if len(args) > 1 else ''} (base image)"
    if step.kind == Kind.FROM_REGISTRY:
        return f"from_registry {' '.join(args)} (base image)"
    if step.kind == Kind.RUN_COMMANDS:
        return "run_commands " + "; ".join(args)
    if step.kind == Kind.ADD_LOCAL:
        return source or f"add_local -> {step.path}"
    if step.kind == Kind.ENV:
        return "env " + " ".join(f"{k}={v}" for k, v in sorted(step.env.items()))
    if step.kind == Kind.WORKDIR:
        return f"workdir {step.path}"
    if step.kind == Kind.SNAPSHOT:
        return "a sandbox's filesystem (snapshot_filesystem)"
    if step.kind in (Kind.PIP_INSTALL, Kind.APT_INSTALL, Kind.RUN_FUNCTION, Kind.ENTRYPOINT) and source:
        return source
    return f"{Kind.Name(step.kind).lower()} {' '.join(args)}".strip()


def _seconds(t: float) -> str:
    return f"{t:.1f}s" if t < 60 else f"{int(t // 60)}m{int(t % 60):02d}s"


class BuildProgress:
    """Shows one image's build from its events (ImageBuildEvent); close() at its end."""

    def __init__(self, image: api_pb2.Image, sources: list[str] | None = None):
        sources = sources or [""] * len(image.steps)
        self.descriptions = [describe(s, src) for s, src in zip(image.steps, sources)]
        self.verbose = terminal.verbose()
        self.live = terminal.is_terminal()
        self.progress = None   # the rich Progress, from the first step on (a built image shows nothing)
        self.task = None       # its running step's task
        self.step = 0          # the running step's index (1-based), 0 between steps
        self.started = 0.0
        self.output: list[str] = []  # the running step's output, folded away
        self.partial = ""            # verbose on a terminal: the end of a line not yet printed

    def event(self, event: api_pb2.ImageBuildEvent):
        if event.HasField("step"):
            self._step(event.step)
        if event.log:
            self._log(event.log)

    def close(self, error: str):
        """The build ended; with `error`, the running step failed: its output is shown in full."""
        self._drop_task()
        if self.step and error:
            took = _seconds(time.monotonic() - self.started)
            if self.live:
                self._print_rich(f"[red]✗[/] {self._escaped(self.step)} [red]failed after {took}[/]")
            else:
                self._plain(f"{self._line(self.step)}: failed after {took}" + ("" if self.verbose else "; its output:"))
            if not self.verbose:
                self._write_output("".join(self.output))
        self._flush_partial()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # ---- steps

    def _step(self, step: api_pb2.BuildStep):
        i = step.index
        if not 1 <= i <= len(self.descriptions):
            return  # not a step of this image (the control plane checks; an older one may not)
        if step.state in (State.BUILDING, State.FETCHING):
            self._start(i, "fetching " if step.state == State.FETCHING else "")
        elif step.state == State.CACHED:
            self._end(i, "cached")
        elif step.state in (State.BUILT, State.FETCHED):
            took = _seconds(time.monotonic() - self.started) if self.step == i else ""
            self._end(i, f"{'built' if step.state == State.BUILT else 'fetched'} in {took}" if took else "done")

    def _start(self, i: int, how: str):
        self.step, self.started, self.output = i, time.monotonic(), []
        if not self.live:
            self._plain(f"{self._line(i)} ...{' (fetching its layer)' if how else ''}")
            return
        if self.progress is None and not self._start_live():
            self._plain(f"{self._line(i)} ...")
            return
        from rich.markup import escape
        self.task = self.progress.add_task(f"{escape(how)}{self._escaped(i)}")

    def _end(self, i: int, how: str):
        self._flush_partial()
        if self.step == i:
            self.step = 0
            self.output = []
        self._drop_task()
        if self.live and (self.progress is not None or self._start_live()):
            line = f"{self._escaped(i)} [dim]{how}[/]"
            self._print_rich(f"[green]✓[/] {f'[dim]{line}[/]' if how == 'cached' else line}")
        else:
            self._plain(f"{self._line(i)}: {how}")

    def _drop_task(self):
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.progress.refresh()  # else the ended step's line is drawn again under what is printed next
            self.task = None

    def _start_live(self) -> bool:
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
        self.progress = terminal.live_progress(SpinnerColumn(), TextColumn("{task.description}"),
                                               TimeElapsedColumn(), transient=True)
        if self.progress is None:  # another live display is shown: plain lines, then
            self.live = False
            return False
        self.progress.start()
        return True

    # ---- output

    def _log(self, text: str):
        if not self.step:  # not a step's: the control plane's, shown as it comes
            self._write_output(text)
        elif self.verbose:
            self._write_output(text)
        else:
            self.output.append(text)

    def _write_output(self, text: str):
        if not text:
            return
        if self.progress is None:
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        # Above the live line: whole lines only (rich prints a line at a time).
        text, self.partial = self.partial + text, ""
        lines = text.split("\n")
        self.partial = lines.pop()
        for line in lines:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _flush_partial(self):
        if self.partial:
            partial, self.partial = self.partial, ""
            self._write_output(partial + "\n")

    # ---- lines

    def _line(self, i: int) -> str:
        text = f"[{i}/{len(self.descriptions)}] {self.descriptions[i - 1]}"
        return text if len(text) <= LINE_WIDTH else text[:LINE_WIDTH - 3] + "..."

    def _escaped(self, i: int) -> str:
        from rich.markup import escape
        return escape(f"[{i}/{len(self.descriptions)}] {self.descriptions[i - 1]}")

    def _plain(self, line: str):
        print(line, file=sys.stderr, flush=True)

    def _print_rich(self, markup: str):
        from rich.text import Text
        self.progress.console.print(Text.from_markup(markup, overflow="ellipsis"), no_wrap=True, overflow="ellipsis")
