"""The caller's terminal, where Ember shows live progress (image builds, `.map` bars) with rich.

Progress goes to stderr, live only when stderr is a terminal; elsewhere (pipes, CI) builds print
plain lines and maps print nothing. One console draws every live display, and while one is shown
the process's prints (its own, and its containers' relayed by print_logs) go through it, above
the display, so that they never tear it.
"""

import os
import sys

_console = None  # (the stderr it was made for, the rich Console)


def is_terminal() -> bool:
    """Whether stderr is a terminal live progress can be drawn on."""
    try:
        return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # replaced by something without isatty, or closed
        return False


def verbose() -> bool:
    """Build output in full as it comes (`-v` on `ember run|deploy|serve`, or EMBER_VERBOSE=1)."""
    return os.environ.get("EMBER_VERBOSE", "") not in ("", "0")


def console():
    """The rich Console on this process's stderr (made again if stderr was replaced)."""
    global _console
    # While a display is live, sys.stderr is its proxy: the console stays the one it draws on.
    stderr = getattr(sys.stderr, "rich_proxied_file", sys.stderr)
    if _console is None or _console[0] is not stderr:
        from rich.console import Console  # only for a live display: importing rich costs ~30 ms
        # Its file is fixed here: a live display replaces sys.stderr with a proxy that prints
        # through this console, which must not write to that proxy in turn.
        _console = (stderr, Console(file=stderr, stderr=True))
    return _console[1]


def live_progress(*columns, **options):
    """A rich Progress on the shared console, or None if another live display is shown (rich draws
    one at a time). It takes over the process's prints while it is shown: stderr's, and stdout's
    when stdout is the terminal too (piped, stdout stays as it is)."""
    from rich.progress import Progress
    c = console()
    # rich (15) would stack a second display over the first; one at a time reads better, so the
    # caller shows plain lines instead.
    if c._live_stack:
        return None
    try:
        stdout_tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        stdout_tty = False
    return Progress(*columns, console=c, redirect_stdout=stdout_tty, redirect_stderr=True, **options)
