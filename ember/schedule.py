"""Schedules for functions of deployed apps: `ember.Cron` and `ember.Period`, as Modal has them.

    @app.function(schedule=ember.Cron("*/5 * * * *", timezone="Europe/Berlin"))
    @app.function(schedule=ember.Period(hours=1))

The control plane runs them: each tick is a call. A tick missed while the control plane was
down runs once when it is back, not once per missed tick. The cron parser is shared by the
SDK (which checks the expression where it is written) and the control plane (which runs it).
"""

import datetime
import zoneinfo

from . import exception
from .proto import api_pb2

NAMES = {
    3: {n: i for i, n in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                    "dec"], start=1)},
    4: {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]  # minute, hour, day of month, month, day of week
FIELD_NAMES = ["minute", "hour", "day of month", "month", "day of week"]


class CronError(ValueError):
    pass


def _field(text: str, index: int) -> set[int]:
    lo, hi = RANGES[index]
    values = set()
    for part in text.lower().split(","):
        body, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise CronError(f"{FIELD_NAMES[index]} {part!r}: the step after '/' must be a positive number")
        if body == "*":
            start, end = lo, hi
        else:
            a, dash, b = body.partition("-")
            names = NAMES.get(index, {})
            try:
                start = names[a] if a in names else int(a)
                end = start if not dash else names[b] if b in names else int(b)
            except ValueError:
                raise CronError(f"{FIELD_NAMES[index]} {part!r} is not a number, range or '*'") from None
            top = 7 if index == 4 else hi  # day of week 7 is Sunday, as 0 is
            if not (lo <= start <= top and lo <= end <= top and start <= end):
                raise CronError(f"{FIELD_NAMES[index]} {part!r} is outside {lo}-{hi}")
            if step and not dash:
                end = hi
        values.update(range(start, end + 1, int(step or 1)))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return values


def parse_cron(expr: str) -> list[set[int]]:
    fields = expr.split()
    if len(fields) != 5:
        raise CronError(f"{expr!r}: a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                        f"not {len(fields)}")
    return [_field(f, i) for i, f in enumerate(fields)]


def next_cron_time(expr: str, timezone: str, after: float) -> float:
    """The first time strictly after `after` (unix seconds) that the expression matches."""
    minute, hour, dom, month, dow = parse_cron(expr)
    fields = expr.split()
    dom_any, dow_any = fields[2] == "*", fields[4] == "*"
    tz = zoneinfo.ZoneInfo(timezone)
    t = datetime.datetime.fromtimestamp(after, tz).replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    for _ in range(366 * 24 * 60):  # at most a year of minutes; a matching one comes far sooner
        day_ok = ((t.day in dom) if dow_any else (t.isoweekday() % 7 in dow) if dom_any
                  else (t.day in dom or t.isoweekday() % 7 in dow))  # cron: either day field matches
        if t.month in month and day_ok and t.hour in hour and t.minute in minute:
            return t.timestamp()
        if t.month not in month or not day_ok:
            t = (t + datetime.timedelta(days=1)).replace(hour=0, minute=0)
        elif t.hour not in hour:
            t = (t + datetime.timedelta(hours=1)).replace(minute=0)
        else:
            t += datetime.timedelta(minutes=1)
    raise CronError(f"{expr!r} never matches")


def next_time(schedule: "api_pb2.Schedule", after: float) -> float:
    if schedule.period_seconds:
        return after + schedule.period_seconds
    return next_cron_time(schedule.cron, schedule.timezone or "UTC", after)


class Cron:
    """Run on a cron schedule: "minute hour day-of-month month day-of-week", in `timezone`."""

    def __init__(self, cron_string: str, timezone: str = "UTC"):
        try:
            parse_cron(cron_string)
            zoneinfo.ZoneInfo(timezone)
        except CronError as e:
            raise exception.InvalidError(f"Cron: {e}") from None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise exception.InvalidError(f"Cron: unknown timezone {timezone!r} (e.g. 'UTC', 'Europe/Berlin')") from None
        self.cron_string = cron_string
        self.timezone = timezone

    def __repr__(self):
        return f"Cron({self.cron_string!r}, timezone={self.timezone!r})"

    def _proto(self) -> "api_pb2.Schedule":
        return api_pb2.Schedule(cron=self.cron_string, timezone=self.timezone)


class Period:
    """Run every so often: Period(days=1), Period(hours=2, minutes=30), ..."""

    def __init__(self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0):
        self.seconds = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        if self.seconds < 1:
            raise exception.InvalidError("Period: pass at least a second, e.g. Period(minutes=5)")

    def __repr__(self):
        return f"Period(seconds={self.seconds:g})"

    def _proto(self) -> "api_pb2.Schedule":
        return api_pb2.Schedule(period_seconds=self.seconds)
