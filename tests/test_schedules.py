"""Schedules: cron parsing, and scheduled functions of deployed apps run by the control plane,
once for ticks missed while it was down, stopping with their app."""

import asyncio
import datetime
import subprocess
import sys
import textwrap
import time
import zoneinfo

import pytest

import ember
from ember import exception
from ember.proto import api_pb2
from ember.schedule import next_time
from ember.server.store import open_store
from conftest import ROOT, on_both_stores, wait_for


def at(text: str, tz: str = "UTC") -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()


def test_cron_expressions():
    def nxt(expr, after, tz="UTC"):
        t = next_time(api_pb2.Schedule(cron=expr, timezone=tz), at(after, tz))
        return datetime.datetime.fromtimestamp(t, zoneinfo.ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")

    assert nxt("*/5 * * * *", "2026-11-27 11:19") == "2026-11-27 11:20"
    assert nxt("0 9 * * mon-fri", "2026-11-27 10:00", "Europe/Berlin") == "2026-11-30 09:00"  # Friday -> Monday
    assert nxt("30 2 1 * *", "2026-11-27 00:00") == "2026-12-01 02:30"
    assert nxt("0 0 * * 7", "2026-11-27 00:00") == "2026-11-29 00:00"  # 7 is Sunday
    assert nxt("15,45 */6 * jan *", "2026-11-27 00:00") == "2027-01-01 00:15"
    assert next_time(api_pb2.Schedule(period_seconds=90), 1000.0) == 1090.0
    for bad in ("61 * * * *", "* * *", "*/0 * * * *", "a b c d e"):
        with pytest.raises(exception.InvalidError):
            ember.Cron(bad)
    with pytest.raises(exception.InvalidError, match="unknown timezone"):
        ember.Cron("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(exception.InvalidError):
        ember.Period(seconds=0)


APP = """
import ember
app = ember.App("{name}")
q = ember.Queue.from_name("{name}-ticks", create_if_missing=True)

@app.function(schedule={schedule})
def tick():
    print("tick ran", flush=True)
    q.put("tick")
"""


def deploy(tmp_path, name, schedule):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(APP.format(name=name, schedule=schedule)))
    out = ember_cli("deploy", str(path))
    assert out.returncode == 0, out.stderr
    return ember.Queue.from_name(f"{name}-ticks", create_if_missing=True)


def ember_cli(*args):
    return subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_a_deployed_schedule_runs_and_stops_with_its_app(cluster, tmp_path):
    q = deploy(tmp_path, "ticker", "ember.Period(seconds=1)")
    assert q.get(timeout=60) == "tick" and q.get(timeout=60) == "tick"
    out = ember_cli("app", "logs", "ticker")
    logs = out.stdout + out.stderr  # Ember's own lines go to stderr, the function's prints to stdout
    assert "scheduled run of tick" in logs and "tick ran" in logs
    assert ember_cli("app", "stop", "ticker").returncode == 0
    q.clear()
    time.sleep(2)  # two periods: a schedule that outlived its app would have ticked
    assert q.len() == 0


@on_both_stores()
def test_ticks_missed_while_the_control_plane_was_down_run_once(cluster, tmp_path):
    q = deploy(tmp_path, "hourly", "ember.Period(hours=1)")
    cluster.kill_server()
    # Five hours pass (as far as the schedule knows) while the control plane is down.
    async def last_run_five_hours_ago():
        store = open_store(cluster.store_url())
        store.set_schedule_run("main", "hourly", "tick", time.time() - 5 * 3600)
        await store.durable()
        store.close()

    asyncio.run(last_run_five_hours_ago())
    cluster.start_server()
    wait_for(lambda: q.len() >= 1, timeout=60, what="the missed tick")
    time.sleep(1)  # several control-plane ticks: a run per missed period would show up here
    assert q.len() == 1
