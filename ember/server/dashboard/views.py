"""The dashboard's pages and event streams, served by the gateway under /dashboard/.

Each page is HTML rendered here from the scheduler's state and the store, as the gRPC API reads
them; its live part is a fragment that an event stream (/dashboard/events/...) renders again at
most once a second while the page is open, and sends when it changed. Log lines come from the
app's log buffer, as `ember app logs -f` follows it. Nothing here runs on the hot path: the
figures are read from what the scheduler keeps anyway (as metrics.py does).

Every page, form and stream checks the session; a session sees its token's workspace (an admin's,
every workspace), and another workspace's objects answer as if they did not exist.
"""

import asyncio
import importlib.resources
import itertools
import logging
import re
import statistics
import time
import urllib.parse

from ...proto import api_pb2
from ..auth import Forbidden, Unauthenticated
from ..fleet import READY, STARTING
from ..usage import HOUR
from .http import EventStream, Request, answer, redirect
from .render import Html, bar_chart, clock_time, duration, esc, form_button, join, link, mib, table, tag, when
from .sessions import COOKIE, SESSION_HOURS, Session, Sessions

log = logging.getLogger("ember.dashboard")

PREFIX = "/dashboard"
LIVE_EVERY = 1.0        # seconds between renders of a live fragment, per open stream
LOG_EVERY = 0.2         # seconds between sends of new log lines, per open stream
LOG_LINES = 500         # lines of history a logs page shows
CALLS_SHOWN = 50
CALLS_EVERY = 5.0       # seconds between looks at the calls in memory, per open stream
SCANNED = 10_000        # outputs and open inputs of a call looked at, the latest
ENDED_SHOWN = 20        # containers that ended, on the containers page
ENDED_EVERY = 5.0       # seconds between reads of them, per open stream
Output = api_pb2.Output
STATUS = {v: k.lower().replace("_", " ") for k, v in Output.Status.items()}
STATIC = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
NAV = (("Apps", "/"), ("Logs", "/logs"), ("Containers", "/containers"), ("Workers", "/workers"),
       ("Usage", "/usage"), ("Objects", "/objects"))
ID = r"([A-Za-z0-9_-]{1,80})"


class Dashboard:
    def __init__(self, sched, *, secure_cookies: bool = False):
        self.sched = sched
        self.store = sched.store
        self.sessions = Sessions(sched.identity)
        self.secure = secure_cookies
        self.streams = 0  # event streams open now (metrics.py shows it: each ends with its page)
        g, p = "GET", "POST"
        # (method, path below PREFIX, handler(request, send, session, *the path's groups))
        self.routes = [(method, re.compile(pattern + "$"), handler) for method, pattern, handler in (
            (g, "/", self.apps_page), (g, f"/apps/{ID}", self.app_page), (p, f"/apps/{ID}/stop", self.stop_app),
            (g, f"/calls/{ID}", self.call_page), (g, "/logs", self.logs_page),
            (g, "/containers", self.containers_page), (g, "/workers", self.workers_page),
            (g, "/usage", self.usage_page), (g, "/objects", self.objects_page), (p, "/logout", self.logout),
            (g, "/events/apps", self.apps_events), (g, f"/events/apps/{ID}", self.app_events),
            (g, "/events/containers", self.containers_events), (g, "/events/workers", self.workers_events),
            (g, "/events/logs", self.log_events))]

    @staticmethod
    def serves(path: str) -> bool:
        return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")

    async def __call__(self, scope, receive, send):
        """Served on a port of its own (main.py), where nothing else is."""
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return
        req = Request(scope, receive)
        if not self.serves(req.path):
            return await answer(send, 404, self._bare("Not found", tag("p", f"nothing is served at {req.path}: "
                                                                        f"this is the dashboard, at {PREFIX}/")))
        if req.path in ("/", PREFIX):
            return await redirect(send, PREFIX + "/")
        sub = req.path[len(PREFIX):]
        if sub.startswith("/static/"):
            return await self._static(send, sub[len("/static/"):])
        if sub == "/login":
            return await (self.login(req, send) if req.method == "POST" else self.login_page(req, send))
        found = next(((handler, m) for method, pattern, handler in self.routes
                      if method == req.method and (m := pattern.match(sub))), None)
        if found is None:
            return await answer(send, 404, self._bare("Not found", tag("p", f"nothing is served at {req.path}")))
        handler, m = found
        session = self.sessions.get(req.cookies.get(COOKIE))
        if session is None:
            if req.method == "GET" and not sub.startswith("/events/"):
                target = req.path + (f"?{urllib.parse.urlencode(req.query)}" if req.query else "")
                return await redirect(send, f"{PREFIX}/login?" + urllib.parse.urlencode({"next": target}))
            return await answer(send, 401, "log in first: the dashboard's session is missing or has ended\n",
                                "text/plain; charset=utf-8")
        if req.method == "POST":
            try:
                form = await req.form()
            except ValueError as e:
                return await answer(send, 413, f"{e}\n", "text/plain; charset=utf-8")
            if not req.same_origin() or not Sessions.csrf_ok(session, form.get("csrf", "")):
                return await answer(send, 403, "this form did not come from this dashboard's page (CSRF check "
                                    "failed): reload the page and try again\n", "text/plain; charset=utf-8")
        await handler(req, send, session, *m.groups())

    # ------------------------------------------------------------------ login

    async def login_page(self, req: Request, send, error: str = "", status: int = 200):
        nxt = req.query.get("next", "")
        body = join([
            tag("p", "Log in with an Ember token: its id and secret (`ember token new` makes one; a new control "
                     "plane writes its first admin token to <data-dir>/admin-token.json)."),
            tag("p", error, class_="error") if error else "",
            Html(f'<form method="post" action="{PREFIX}/login" class="login">'
                 '<label>Token id <input name="token_id" autocomplete="username" required></label>'
                 '<label>Token secret <input name="token_secret" type="password" autocomplete="current-password" '
                 'required></label>'
                 f'<input type="hidden" name="next" value="{esc(nxt)}">'
                 '<button type="submit">Log in</button></form>')])
        await answer(send, status, self._bare("Log in", body))

    async def login(self, req: Request, send):
        try:
            form = await req.form()
        except ValueError as e:
            return await answer(send, 413, f"{e}\n", "text/plain; charset=utf-8")
        if not req.same_origin():
            return await answer(send, 403, "a login must come from this dashboard's page\n",
                                "text/plain; charset=utf-8")
        try:
            sid, _session = self.sessions.login(form.get("token_id", "").strip(), form.get("token_secret", "").strip())
        except (Unauthenticated, Forbidden) as e:
            return await self.login_page(req, send, str(e), 401)
        nxt = form.get("next", "")
        if not nxt.startswith(PREFIX + "/") or any(ord(c) < 0x21 or c == "\\" for c in nxt):
            nxt = PREFIX + "/"  # only a page of its own: never a redirect elsewhere
        cookie = (f"{COOKIE}={sid}; Path={PREFIX}/; HttpOnly; SameSite=Strict; Max-Age={int(SESSION_HOURS * 3600)}"
                  + ("; Secure" if self.secure or req.scheme == "https" else ""))
        await redirect(send, nxt, [("set-cookie", cookie)])

    async def logout(self, req: Request, send, session: Session):
        self.sessions.logout(req.cookies.get(COOKIE))
        await redirect(send, f"{PREFIX}/login", [("set-cookie", f"{COOKIE}=; Path={PREFIX}/; HttpOnly; "
                                                                 "SameSite=Strict; Max-Age=0")])

    # ------------------------------------------------------------------ apps

    async def apps_page(self, req, send, session):
        await self._page(send, session, "Apps", self._live("/events/apps", self.apps_fragment(session, {})))

    async def apps_events(self, req, send, session):
        await self._stream_fragment(send, req, session, lambda state: self.apps_fragment(session, state))

    def apps_fragment(self, session: Session, state: dict) -> Html:
        apps = sorted(self.sched.apps.listing(session.workspace),
                      key=lambda a: (a.workspace, not a.deployed, a.name, -a.version))
        rows = []
        for a in apps:
            if a.deployed and not a.version:
                continue  # being deployed: not published yet
            fns = list(a.functions.values())
            rows.append([
                *([a.workspace] if session.workspace is None else []),
                link(f"{PREFIX}/apps/{a.app_id}", a.name), a.app_id,
                f"deployed v{a.version}" if a.deployed else "ephemeral",
                "superseded" if a.superseded else "running",
                len(fns), sum(_queued(f) for f in fns), sum(_running(f) for f in fns),
                sum(len(f.containers) for f in fns),
                form_button(f"{PREFIX}/apps/{a.app_id}/stop", "Stop", session.csrf,
                            f"Stop app {a.name}? Its calls are cancelled and its containers stop.")])
        headers = [*(["Workspace"] if session.workspace is None else []), "App", "Id", "Kind", "State", "Functions",
                   "Queued", "Running", "Containers", ""]
        return table(headers, rows, "no app is running: `ember deploy FILE` or `ember run FILE` starts one")

    async def app_page(self, req, send, session, app_id):
        ref = self._app(session, app_id)
        if ref is None:
            return await self._not_found(send, session, f"there is no app with id {app_id}")
        workspace, app = ref
        parts = []
        name = app.name if app is not None else ""
        facts = [("Id", app_id), ("Workspace", workspace)]
        if app is not None:
            facts += [("Kind", f"deployed, version {app.version}" if app.deployed else "ephemeral"),
                      ("State", "superseded" if app.superseded else "running")]
        else:
            facts.append(("State", "stopped"))
        parts.append(tag("dl", join(join([tag("dt", k), tag("dd", v)]) for k, v in facts)))
        actions = [link(f"{PREFIX}/logs?app={app_id}", "Logs")]
        if app is not None:
            actions.append(form_button(f"{PREFIX}/apps/{app_id}/stop", "Stop app", session.csrf,
                                       f"Stop app {name}? Its calls are cancelled and its containers stop."))
        parts.append(tag("div", join(actions), class_="actions"))
        if app is not None:
            parts.append(self._live(f"/events/apps/{app_id}", self.app_fragment(session, app_id, {})))
        history = self.store.app_history(workspace, name) if app is not None and app.deployed else []
        if history:
            parts.append(tag("h2", "Deployed versions"))
            parts.append(table(["Version", "App id", "Deployed", "State", "Stopped"], [
                [f"v{version}", link(f"{PREFIX}/apps/{aid}", aid), when(at), state, when(stopped)]
                for aid, version, at, state, stopped in history]))
        parts.append(tag("h2", "Failed inputs"))
        parts.append(self._failures(workspace, app_id))
        await self._page(send, session, f"App {name or app_id}", join(parts))

    async def app_events(self, req, send, session, app_id):
        if self.sched.apps.app(app_id, session.workspace) is None:
            return await answer(send, 404, f"app {app_id} is not running\n", "text/plain; charset=utf-8")
        await self._stream_fragment(send, req, session, lambda state: self.app_fragment(session, app_id, state))

    def app_fragment(self, session: Session, app_id: str, state: dict) -> Html | None:
        """The app's functions with their figures, and its calls in memory; None once it stopped."""
        app = self.sched.apps.app(app_id, session.workspace)
        if app is None:
            return None
        now = time.time()
        rows = []
        for fn in sorted(app.functions.values(), key=lambda f: f.name):
            ended = fn.completed + fn.failed
            before = state.get(fn.function_id)
            rate = (ended - before[1]) / (now - before[0]) if before and now > before[0] else None
            state[fn.function_id] = (now, ended)
            durations = list(fn.durations)
            p50, p99 = _percentiles(durations)
            next_run = self.sched.cron.next_run(fn)
            rows.append([fn.name, _queued(fn), _running(fn), len(fn.containers),
                         "–" if rate is None else f"{rate:.1f}", duration(p50), duration(p99), fn.completed,
                         fn.failed, when(next_run) if next_run else ""])
        functions = table(["Function", "Queued", "Running", "Containers", "Inputs/s", "p50", "p99", "Succeeded",
                           "Failed", "Next run"], rows, "no function yet")
        at, calls = state.get("calls", (0.0, None))
        if calls is None or time.monotonic() - at >= CALLS_EVERY:  # every call in memory is looked at: not often
            calls = self._calls(app, now)
            state["calls"] = (time.monotonic(), calls)
        return join([tag("h2", "Functions"), functions, tag("h2", "Calls"), calls])

    def _calls(self, app, now: float) -> Html:
        rows = []
        for call in self.sched.ledger.calls_of(app, CALLS_SHOWN):
            # A large map's outputs and inputs: the latest SCANNED of them say enough.
            failed = sum(1 for o in call.outputs[-SCANNED:] if o.output.status in FAILED)
            attempts = max((i.attempts for i in itertools.islice(call.inputs.values(), SCANNED)), default="")
            rows.append([link(f"{PREFIX}/calls/{call.call_id}", call.call_id), call.function.name,
                         _call_status(call), f"{call.num_done}/{'?' if call.num_inputs is None else call.num_inputs}",
                         failed or "", attempts, duration((call.finished_at or now) - call.created_at),
                         when(call.created_at)])
        return table(["Call", "Function", "Status", "Done", "Failed", "Attempts", "Duration", "Started"], rows,
                     "no call in the last minutes")

    async def stop_app(self, req, send, session, app_id):
        app = self.sched.apps.app(app_id, session.workspace)
        if app is None:
            return await self._not_found(send, session, f"app {app_id} is not running (stopped already?)")
        # As `ember app stop`: its calls end cancelled, its containers stop.
        self.sched.stop_app(app_id, "it was stopped from the dashboard")
        await self.store.durable()
        log.info("dashboard: app %s (%s) stopped by token %s", app.name, app_id, session.principal.token_id)
        await redirect(send, f"{PREFIX}/")

    def _failures(self, workspace: str, app_id: str) -> Html:
        letters = self.sched.dead_letters.list(workspace, app_id)
        if not letters:
            return tag("p", "no input failed (after its retries)", class_="empty")
        items = []
        for d in letters[-CALLS_SHOWN:]:
            last = d.history[-1] if d.history else None
            head = (f"{d.function_name} · call {d.call_id} input {d.idx} · {STATUS.get(d.status, d.status)} after "
                    f"{d.attempts} attempt{'s' * (d.attempts != 1)} · {when(d.failed_at)}")
            items.append(tag("div", join([
                tag("div", head, class_="head"), tag("div", d.error, class_="error"),
                tag("pre", last.traceback, class_="traceback") if last and last.traceback else "",
                link(f"{PREFIX}/calls/{d.call_id}", "the call")]), class_="failure"))
        return join(items)

    # ------------------------------------------------------------------ calls

    async def call_page(self, req, send, session, call_id):
        call = self.sched.ledger.lookup_call(call_id, session.workspace)
        if call is None:
            return await self._not_found(send, session, f"there is no function call {call_id} (or its outputs "
                                                        "expired)")
        app = call.function.app
        now = time.time()
        by_idx: dict[int, list] = {}
        for co in self.sched.ledger.outputs_after(call, 0, 10_000):
            o = co.output
            if o.status != Output.GENERATOR_ITEM:
                by_idx[o.idx] = [o.idx, STATUS.get(o.status, o.status), len(o.attempts) or 1, "", o.error,
                                 tag("pre", o.traceback, class_="traceback") if o.traceback else ""]
        for inp in call.inputs.values():
            running = inp.container is not None
            since = inp.container.since if running else None
            by_idx[inp.idx] = [inp.idx, "running" if running else "queued", inp.attempts,
                               duration(self.sched.clock() - since) if since is not None else "", "", ""]
        facts = [("Function", call.function.name), ("App", link(f"{PREFIX}/apps/{app.app_id}", app.name)),
                 ("Status", _call_status(call)), ("Inputs", f"{call.num_done} done of "
                                                            f"{'?' if call.num_inputs is None else call.num_inputs}"),
                 ("Started", when(call.created_at)),
                 ("Duration", duration((call.finished_at or now) - call.created_at))]
        body = join([tag("dl", join(join([tag("dt", k), tag("dd", v)]) for k, v in facts)),
                     tag("div", link(f"{PREFIX}/logs?app={app.app_id}&call={call_id}", "Its logs"), class_="actions"),
                     tag("h2", "Inputs"),
                     table(["Input", "Status", "Attempts", "Running for", "Error", "Traceback"],
                           [by_idx[i] for i in sorted(by_idx)], "no input yet")])
        await self._page(send, session, f"Call {call_id}", body)

    # ------------------------------------------------------------------ logs

    async def logs_page(self, req, send, session):
        q = _log_filters(req.query)
        apps = sorted(self.sched.apps.listing(session.workspace), key=lambda a: (a.name, -a.version))
        options = join(tag("option", f"{a.name} ({a.app_id})", value=a.app_id, selected="" if a.app_id == q["app"]
                           else None) for a in apps)
        if q["app"] and not any(a.app_id == q["app"] for a in apps):
            options = join([tag("option", q["app"], value=q["app"], selected=""), options])
        filters = Html(
            f'<form method="get" action="{PREFIX}/logs" class="filters">'
            f'<label>App <select name="app"><option value="">choose an app</option>{options}</select></label>'
            + "".join(f'<label>{label} <input name="{k}" value="{esc(q[k])}"></label>'
                      for k, label in (("function", "Function"), ("container", "Container"), ("call", "Call"),
                                       ("search", "Search")))
            + '<button type="submit">Show</button></form>')
        if not q["app"]:
            return await self._page(send, session, "Logs", join([filters, tag("p", "Choose an app to see its logs.",
                                                                              class_="empty")]))
        ref = self._app(session, q["app"])
        if ref is None:
            return await self._not_found(send, session, f"there is no app with id {q['app']}")
        workspace, app = ref
        rows = self._log_history(workspace, q)
        # The store holds every line up to the buffer's end (each is written as it comes, and this
        # runs between two of them): the live lines follow from there.
        last = app.log.seq if app is not None else 0
        lines = join(_log_line(r[1], r[2], r[5], r[6], r[7], r[8], r[9]) for r in rows)
        live = ""
        if app is not None:
            live = PREFIX + "/events/logs?" + urllib.parse.urlencode({**{k: v for k, v in q.items() if v},
                                                                     "after": last})
        note = tag("p", f"the last {LOG_LINES} lines that match" if len(rows) >= LOG_LINES else
                   ("live: new lines appear as they come" if app else "the app has stopped"), class_="note")
        body = join([filters, note, tag("div", lines, id="log", class_="log", data_log_events=live or None)])
        await self._page(send, session, "Logs", body)

    def _log_history(self, workspace: str, q: dict) -> list[tuple]:
        return self.store.logs(workspace, q["app"], function_name=q["function"], container_id=q["container"],
                               call_id=q["call"], search=q["search"], tail=LOG_LINES, limit=LOG_LINES)

    async def log_events(self, req, send, session):
        q = _log_filters(req.query)
        ref = self._app(session, q["app"]) if q["app"] else None
        try:
            after = int(req.query.get("after", "0"))
        except ValueError:
            after = 0

        async def produce(out: EventStream):
            app = ref[1] if ref else None
            if app is not None:
                async for batch in app.log.follow(after, False):
                    if self.sessions.get(req.cookies.get(COOKIE)) is None:
                        break
                    lines = [[e.seq, e.timestamp, e.function_name, e.container_id, e.input_id, e.fd, e.data]
                             for e in batch.entries if _log_matches(e, q)]
                    if lines:
                        await out.emit_json("log", lines)
                    await asyncio.sleep(LOG_EVERY)  # what comes meanwhile goes in the next send
            await out.emit("end", "")

        if ref is None:
            return await answer(send, 404, f"there is no app with id {q['app']}\n", "text/plain; charset=utf-8")
        await self._stream(send, req, produce)

    # ------------------------------------------------------------------ containers and workers

    async def containers_page(self, req, send, session):
        await self._page(send, session, "Containers", self._live("/events/containers",
                                                                 self.containers_fragment(session, {})))

    async def containers_events(self, req, send, session):
        await self._stream_fragment(send, req, session, lambda state: self.containers_fragment(session, state))

    def containers_fragment(self, session: Session, state: dict) -> Html:
        now = self.sched.clock()
        rows = []
        for c in sorted(self.sched.fleet.containers(), key=lambda c: c.seq):
            fn = c.function
            if session.workspace is not None and fn.app.workspace != session.workspace:
                continue
            cpu = self.sched.usage.cpu_seconds(c.container_id)
            state_name = "stopping" if c.stopping else {STARTING: "starting", READY: "ready"}.get(c.state,
                                                                                                   "disconnected")
            rows.append([
                *([fn.app.workspace] if session.workspace is None else []),
                link(f"{PREFIX}/logs?app={fn.app.app_id}&container={c.container_id}", c.container_id),
                link(f"{PREFIX}/apps/{fn.app.app_id}", fn.app.name), fn.name, c.worker.name,
                fn.definition.image.image_id[:12] or "–", state_name, duration(now - c.requested_at), len(c.held),
                f"{c.cpu:g}", "–" if cpu is None else duration(cpu),
                f"{mib(c.memory_used / 2**20) if c.memory_used else '–'} of {mib(c.memory_mb)}"])
        headers = [*(["Workspace"] if session.workspace is None else []), "Container", "App", "Function", "Worker",
                   "Image", "State", "Age", "Inputs held", "CPU", "CPU time used", "Memory used of reserved"]
        at, ended = state.get("ended", (0.0, None))
        if ended is None or time.monotonic() - at >= ENDED_EVERY:  # a read of the store: not every second
            ended = self._ended_containers(session)
            state["ended"] = (time.monotonic(), ended)
        return join([table(headers, rows, "no container is running"), tag("h2", "Ended lately"), ended])

    def _ended_containers(self, session: Session) -> Html:
        rows = []
        for cid, ws, app_id, app_name, fid, worker, created, ended_at, reason in self.store.ended_containers(
                session.workspace, ENDED_SHOWN):
            rows.append([*([ws] if session.workspace is None else []),
                         link(f"{PREFIX}/logs?app={app_id}&container={cid}", cid),
                         link(f"{PREFIX}/apps/{app_id}", app_name or app_id), self._function_name(fid), worker,
                         when(ended_at), duration((ended_at or created) - created), reason])
        return table([*(["Workspace"] if session.workspace is None else []), "Container", "App", "Function",
                      "Worker", "Ended", "Lived", "Exit cause"], rows, "no container has ended")

    async def workers_page(self, req, send, session):
        await self._page(send, session, "Workers", self._live("/events/workers", self.workers_fragment(session, {})))

    async def workers_events(self, req, send, session):
        await self._stream_fragment(send, req, session, lambda state: self.workers_fragment(session, state))

    def workers_fragment(self, session: Session, state: dict) -> Html:
        now = self.sched.clock()
        rows = []
        for w in self.sched.fleet.workers():
            if not w.connected:
                status = "disconnected"
            elif w.cordoned(now):
                status = f"cordoned: {w.cordon_reason}"
            else:
                status = "draining" if w.draining else "connected"
            free_cpu, free_mem = w.free()
            mine = [c for c in w.containers.values()
                    if session.workspace is None or c.function.app.workspace == session.workspace]
            gpus = ", ".join(w.gpus.kinds)
            rows.append([w.name, status, w.backend or "–", f"{free_cpu:g} of {w.cpu:g}",
                         f"{mib(free_mem)} of {mib(w.memory_mb)}",
                         f"{len(w.gpus.free())} free of {len(w.gpus.kinds)} ({gpus})" if gpus else "none",
                         " ".join(f"{k}={v}" for k, v in sorted(w.labels.items())) or "–", len(mine),
                         duration(now - w.last_seen) + " ago"])
        return table(["Worker", "State", "Backend", "CPU free", "Memory free", "GPUs", "Labels",
                      "Containers" + ("" if session.workspace is None else " (yours)"), "Last seen"], rows,
                     "no worker has joined: start one with `ember worker --server URL`")

    # ------------------------------------------------------------------ usage and objects

    async def usage_page(self, req, send, session):
        try:
            hours = max(1, min(24 * 31, int(req.query.get("hours", "24"))))
        except ValueError:
            hours = 24
        self.sched.usage.flush()  # what is not stored yet counts too
        now = time.time() // HOUR * HOUR
        since = now - (hours - 1) * HOUR
        by_ws: dict[str, dict[float, tuple]] = {}
        for ws, hour, cpu, mem, gpu, inputs in self.store.usage_hours(session.workspace, since):
            by_ws.setdefault(ws, {})[hour] = (cpu, mem, gpu, inputs)
        parts = [tag("p", join(["Per hour, the last ", link(f"{PREFIX}/usage?hours=24", "day"), " or ",
                                link(f"{PREFIX}/usage?hours=168", "week"), "."]),
                     class_="note")]
        if not by_ws:
            parts.append(tag("p", "nothing was used in this period", class_="empty"))
        for ws in sorted(by_ws):
            hourly = by_ws[ws]
            points = [(since + i * HOUR, hourly.get(since + i * HOUR, (0, 0, 0, 0))[0]) for i in range(hours)]
            totals = [sum(v[i] for v in hourly.values()) for i in range(4)]
            parts += [tag("h2", f"Workspace {ws}"), tag("p", "CPU-seconds used, per hour"),
                      bar_chart(points, "CPU s"),
                      table(["CPU-seconds", "Memory GiB-seconds (reserved)", "GPU-seconds", "Inputs"],
                            [[f"{totals[0]:.1f}", f"{totals[1]:.1f}", f"{totals[2]:.1f}", int(totals[3])]])]
        await self._page(send, session, "Usage", join(parts))

    async def objects_page(self, req, send, session):
        parts = []
        for ws in self._workspaces(session):
            if session.workspace is None:
                parts.append(tag("h2", f"Workspace {ws}", class_="workspace"))
            parts.append(tag("h3", "Secrets"))
            secrets = self.store.list_secrets(ws)  # names only: never a value
            parts.append(table(["Name", "Keys", "Created"], [[n, k, when(t)] for n, t, k in secrets]))
            for kind, size in (("volume", "Files"), ("dict", "Entries"), ("queue", "Items")):
                parts.append(tag("h3", kind.capitalize() + "s"))
                rows = [[n, oid, count, when(t)] for n, oid, t, count in self.store.list_objects(ws, kind)]
                parts.append(table(["Name", "Id", size, "Created"], rows))
            schedules = []
            for app in self.sched.apps.current_versions():
                if app.workspace != ws:
                    continue
                for fn in app.functions.values():
                    nxt = self.sched.cron.next_run(fn)
                    if nxt is not None:
                        s = fn.definition.schedule
                        schedules.append([app.name, fn.name, s.cron or f"every {duration(s.period_seconds)}",
                                          when(nxt)])
            parts.append(tag("h3", "Schedules"))
            parts.append(table(["App", "Function", "Schedule", "Next run"], schedules))
        await self._page(send, session, "Objects", join(parts))

    # ------------------------------------------------------------------ parts

    def _function_name(self, function_id: str) -> str:
        fn = self.sched.apps.function(function_id)
        if fn is not None:
            return fn.name
        stored = self.store.function(function_id)  # its app stopped
        return stored[2].name if stored else ""

    def _workspaces(self, session: Session) -> list[str]:
        return [session.workspace] if session.workspace is not None else sorted(self.sched.identity.workspaces)

    def _app(self, session: Session, app_id: str):
        """(its workspace, the running app or None if it stopped) for an app the session may see, else None."""
        app = self.sched.apps.app(app_id, session.workspace)
        if app is not None:
            return app.workspace, app
        ws = self.store.app_workspace(app_id)
        if ws is None or (session.workspace is not None and ws != session.workspace):
            return None
        return ws, None

    async def _stream_fragment(self, send, req: Request, session: Session, render):
        """Render a live fragment at most once a second while the page is open; send it when it changed."""
        sid = req.cookies.get(COOKIE)

        async def produce(out: EventStream):
            state: dict = {}
            last = None
            while self.sessions.get(sid) is session:
                fragment = render(state)
                if fragment is None:
                    break
                if fragment != last:
                    await out.emit("fragment", fragment)
                    last = fragment
                await asyncio.sleep(LIVE_EVERY)
            await out.emit("end", "")

        await self._stream(send, req, produce)

    async def _stream(self, send, req: Request, produce):
        self.streams += 1
        try:
            await EventStream(send, req.receive).run(produce)
        finally:
            self.streams -= 1

    def _live(self, events: str, fragment: Html | None) -> Html:
        return tag("div", fragment or "", data_events=PREFIX + events, class_="live")

    async def _page(self, send, session: Session, title: str, body: Html, status: int = 200):
        who = ("admin · every workspace" if session.workspace is None else f"workspace {session.workspace}")
        nav = join(link(PREFIX + path, label) for label, path in NAV)
        header = join([link(PREFIX + "/", "Ember"), tag("nav", nav),
                       tag("span", f"{who} · token {session.principal.token_id}", class_="who"),
                       form_button(PREFIX + "/logout", "Log out", session.csrf)])
        await answer(send, status, _document(title, join([tag("header", header),
                                                          tag("main", join([tag("h1", title), body]))])))

    async def _not_found(self, send, session: Session, why: str):
        await self._page(send, session, "Not found", tag("p", why, class_="error"), 404)

    def _bare(self, title: str, body: Html) -> str:
        return _document(title, join([tag("header", link(PREFIX + "/", "Ember")),
                                      tag("main", join([tag("h1", title), body]))]))

    async def _static(self, send, name: str):
        if name not in STATIC:
            return await answer(send, 404, "no such file\n", "text/plain; charset=utf-8")
        data = importlib.resources.files(__package__).joinpath("static", name).read_bytes()
        await answer(send, 200, data, STATIC[name])


LINE_CLASS = {2: "line err", 3: "line event"}  # stderr; Ember's own events about the app
FAILED = (Output.FAILURE, Output.TIMEOUT, Output.CONTAINER_EXITED, Output.INIT_FAILURE, Output.OUT_OF_MEMORY)


def _document(title: str, body: Html) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)} · Ember</title>"
            f'<link rel="stylesheet" href="{PREFIX}/static/dashboard.css">'
            f'<script src="{PREFIX}/static/dashboard.js" defer></script></head>'
            f"<body>{body}</body></html>")


def _queued(fn) -> int:
    return sum(not inp.done for inp in fn.pending)


def _running(fn) -> int:
    return sum(len(c.held) for c in fn.containers.values())


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98]


def _call_status(call) -> str:
    if call.cancelled:
        return "cancelled"
    if call.done():
        return "done"
    return "running" if any(i.container is not None for i in call.inputs.values()) else "queued"


def _log_filters(query: dict) -> dict:
    return {k: query.get(k, "").strip() for k in ("app", "function", "container", "call", "search")}


def _log_matches(e: api_pb2.LogEntry, q: dict) -> bool:
    return ((not q["function"] or e.function_name == q["function"])
            and (not q["container"] or e.container_id == q["container"])
            and (not q["call"] or e.call_id == q["call"])
            and (not q["search"] or q["search"] in e.data))


def _log_line(seq, at, function_name, container_id, input_id, fd, data) -> Html:
    source = " · ".join(p for p in (function_name, container_id, input_id) if p)
    return tag("div", join([tag("time", clock_time(at)), tag("span", source, class_="src"),
                            tag("span", data.rstrip("\n"), class_="text")]),
               class_=LINE_CLASS.get(fd, "line"), data_seq=seq)

