"""How `list` commands print rows: a table on a terminal, tab-separated lines when piped (one row a
line, no header, for `cut` and `awk`), and JSON with `--json` (the raw values, for scripts).

Every list command goes through `print_rows`, so the three forms stay one way of doing it.
"""

import dataclasses
import json
import sys
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Column:
    key: str                              # the row's key, and the JSON field
    header: str                           # the table's heading
    show: Callable[[Any], str] = str      # the value as the table and the piped lines show it
    row: Callable[[dict], str] | None = None  # or the cell made of the whole row (of several values)

    def cell(self, row: dict) -> str:
        return self.row(row) if self.row is not None else self.show(row.get(self.key))


def list_parser(subparsers, name: str = "list", **kwargs):
    """A list command's parser, with --json: every list command has it."""
    parser = subparsers.add_parser(name, **kwargs)
    add_json_flag(parser)
    return parser


def add_json_flag(parser, help: str = "print the rows as JSON, a list of objects (for scripts)"):
    parser.add_argument("--json", action="store_true", help=help)


def add_verbose_flag(parser):
    """-v on the commands that build images (run, deploy, serve)."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show image builds' output in full as it comes (else folded under each step, and "
                             "shown when one fails); EMBER_VERBOSE=1 does the same")


def when(t: float) -> str:
    """A time in lists: local, to the second; "-" for none."""
    import datetime
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def print_rows(rows: list[dict], columns: list[Column], as_json: bool, empty: str = "") -> None:
    """Print rows (dicts of plain values) in the form the output calls for. `empty` is said (to
    stderr, on a terminal) when there are none, so a table never leaves the user guessing."""
    if as_json:
        print(json.dumps(rows, default=str))
        return
    cells = [[c.cell(row) for c in columns] for row in rows]
    if not sys.stdout.isatty():
        for line in cells:
            print("\t".join(line))
        return
    if not rows:
        if empty:
            print(empty, file=sys.stderr)
        return
    from rich.console import Console  # only on a terminal: importing rich costs ~30 ms
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for c in columns:
        table.add_column(c.header)
    for line in cells:
        table.add_row(*line)
    Console().print(table)
