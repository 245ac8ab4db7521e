"""The web dashboard, against a real cluster: its sessions and workspaces checked over plain HTTP,
then driven in headless Chromium (Debian's, through Playwright): log in, see a running app,
watch a call's log lines arrive while the page is open, see a failing input's traceback, stop an
app from the page. HTML in app names and log lines shows as text.

With EMBER_SCREENSHOTS=DIR, the browser test also saves screenshots of the main pages there
(`EMBER_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/test_dashboard.py`).
"""

import http.client
import json
import os
import pathlib
import re
import subprocess
import threading
import urllib.parse

import pytest

import ember
from conftest import APPS, PY, ROOT, module_cluster, run_async, wait_for
from ember.server.auth import Identity
from ember.server.dashboard.sessions import SESSION_HOURS, Sessions
from ember.server.store import open_store

import dash_app

CHROMIUM = "/usr/bin/chromium"


def cli(env, *args) -> str:
    out = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(APPS), **env))
    assert out.returncode == 0, out.stderr
    return out.stdout


class Http:
    """Plain requests to the dashboard (or the gateway), redirects not followed, with a session
    cookie once logged in."""

    def __init__(self, url: str):
        self.netloc = urllib.parse.urlsplit(url).netloc
        self.cookie = ""

    def request(self, method: str, path: str, form: dict | None = None, headers=None):
        conn = http.client.HTTPConnection(self.netloc, timeout=30)
        try:
            body = urllib.parse.urlencode(form) if form is not None else None
            hdrs = {"cookie": self.cookie} if self.cookie else {}
            if form is not None:
                hdrs["content-type"] = "application/x-www-form-urlencoded"
            hdrs.update(headers or {})
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read().decode()
        finally:
            conn.close()

    def login(self, token: dict) -> "Http":
        status, headers, body = self.request("POST", "/dashboard/login", {
            "token_id": token["token_id"], "token_secret": token["token_secret"]})
        assert status == 303, body
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie, cookie
        self.cookie = cookie.split(";")[0]
        return self

    def csrf(self, path="/dashboard/") -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.request("GET", path)[2]).group(1)


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    """One cluster for the module: the admin's token, a workspace token of `main`, and one of
    workspace `b` that deployed an app of its own."""
    with module_cluster(tmp_path_factory.mktemp("dash")) as c:
        env = c.env
        c.admin = {"token_id": env["EMBER_TOKEN_ID"], "token_secret": env["EMBER_TOKEN_SECRET"]}
        c.main = json.loads(cli(env, "token", "new", "--json"))
        cli(env, "workspace", "create", "b")
        c.b = json.loads(cli(env, "token", "new", "--workspace", "b", "--json"))
        c.b_env = dict(env, EMBER_TOKEN_ID=c.b["token_id"], EMBER_TOKEN_SECRET=c.b["token_secret"])
        cli(c.b_env, "deploy", str(APPS / "logs_app.py"))
        cli(c.b_env, "deploy", str(APPS / "dash_cron.py"))
        subprocess.run([PY, "-c", "import ember; ember.Function.from_name('logger', 'speak').remote(1, 'secret-b')"],
                       check=True, env=dict(os.environ, PYTHONPATH=str(APPS), **c.b_env), timeout=120)
        c.b_app = re.search(r"logger\s+(ap-[0-9a-f]+)", cli(c.b_env, "app", "list")).group(1)
        yield c


def test_sessions_and_workspaces_are_checked_on_the_server(dash):
    anon = Http(dash.dashboard_url)
    # The gateway's port sends browsers to the dashboard's, which serves nothing else.
    status, headers, _ = Http(dash.web_url).request("GET", "/dashboard/logs?app=x")
    assert status == 307 and headers["location"] == dash.dashboard_url + "/dashboard/logs?app=x"
    assert anon.request("GET", "/metrics")[0] == 404 and anon.request("GET", "/logger-speak")[0] == 404
    status, headers, _ = anon.request("GET", "/")
    assert status == 303 and headers["location"] == "/dashboard/"
    for path in ("/dashboard/", f"/dashboard/apps/{dash.b_app}", "/dashboard/logs?app=x", "/dashboard/containers",
                 "/dashboard/workers", "/dashboard/usage", "/dashboard/objects", "/dashboard/calls/fc-1"):
        status, headers, _ = anon.request("GET", path)
        assert status == 303 and headers["location"].startswith("/dashboard/login?next="), (path, status)
    for path in ("/dashboard/events/apps", f"/dashboard/events/apps/{dash.b_app}", "/dashboard/events/containers",
                 "/dashboard/events/workers", f"/dashboard/events/logs?app={dash.b_app}"):
        assert anon.request("GET", path)[0] == 401, path
    assert anon.request("POST", f"/dashboard/apps/{dash.b_app}/stop", {"csrf": "x"})[0] == 401
    assert anon.request("POST", "/dashboard/logout", {"csrf": "x"})[0] == 401

    # Logging in takes a valid admin or workspace token, as the gRPC API checks it.
    status, _, body = anon.request("POST", "/dashboard/login", {"token_id": dash.main["token_id"],
                                                                "token_secret": "wrong"})
    assert status == 401 and "is not valid (unknown id or wrong secret)" in body
    worker = json.loads((dash.tmp / "server" / "worker-token.json").read_text())
    status, _, body = anon.request("POST", "/dashboard/login", worker)
    assert status == 401 and "a worker credential cannot" in body
    # After logging in, a page of this gateway only: never a redirect elsewhere.
    status, headers, _ = anon.request("POST", "/dashboard/login", {**dash.main, "next": "//evil.example/"})
    assert status == 303 and headers["location"] == "/dashboard/"

    # A token of workspace main sees none of b's apps, logs or calls, even by their ids.
    a = Http(dash.dashboard_url).login(dash.main)
    assert "logger" not in a.request("GET", "/dashboard/")[2]
    status, _, body = a.request("GET", f"/dashboard/apps/{dash.b_app}")
    assert status == 404 and "secret-b" not in body
    for path in (f"/dashboard/logs?app={dash.b_app}", f"/dashboard/events/logs?app={dash.b_app}",
                 f"/dashboard/events/apps/{dash.b_app}"):
        status, _, body = a.request("GET", path)
        assert status == 404 and "secret-b" not in body, path
    assert a.request("GET", "/dashboard/logs?app=ap-doesnotexist")[0] == 404
    assert a.request("POST", f"/dashboard/apps/{dash.b_app}/stop", {"csrf": a.csrf()})[0] == 404
    assert "logger" in cli(dash.b_env, "app", "list")  # still running
    # b itself sees its app and its log lines; an admin sees every workspace.
    b = Http(dash.dashboard_url).login(dash.b)
    assert "logger" in b.request("GET", "/dashboard/")[2]
    assert "secret-b 0" in b.request("GET", f"/dashboard/logs?app={dash.b_app}")[2]
    page = b.request("GET", f"/dashboard/apps/{dash.b_app}")[2]
    assert "Deployed versions" in page and "<td>v1</td>" in page and "<td>speak</td>" in page
    admin = Http(dash.dashboard_url).login(dash.admin)
    assert "logger" in admin.request("GET", "/dashboard/")[2]

    # Logs are searched on the server; containers, secrets and usage are the workspace's own.
    found = b.request("GET", f"/dashboard/logs?app={dash.b_app}&search=warn")[2]
    assert "warn secret-b" in found and "secret-b 0" not in found
    cli(dash.b_env, "secret", "create", "b-only", "KEY=hidden-value")
    cli(dash.b_env, "volume", "create", "b-volume")
    cli(dash.b_env, "queue", "create", "b-queue")
    objects = b.request("GET", "/dashboard/objects")[2]
    assert "b-only" in objects and "hidden-value" not in objects and "b-volume" in objects and "b-queue" in objects
    nightly = re.search(r"<td>nightly</td><td>nightly</td><td>30 2 \* \* \*</td><td>([^<]+)</td>", objects)
    assert nightly and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:00", nightly.group(1)), objects
    theirs = a.request("GET", "/dashboard/objects")[2]
    assert "b-only" not in theirs and "b-volume" not in theirs and "nightly" not in theirs
    assert "logger" in b.request("GET", "/dashboard/containers")[2]
    # Its memory in use, as its worker measures it each heartbeat, of what it reserved.
    wait_for(lambda: re.search(r"<td>[1-9][\d.]* MiB of \d", b.request("GET", "/dashboard/containers")[2]),
             what="the memory the logger container uses, on the containers page")
    assert "logger" not in a.request("GET", "/dashboard/containers")[2]
    assert "logger" in admin.request("GET", "/dashboard/containers")[2]
    usage = b.request("GET", "/dashboard/usage")[2]
    assert "<svg" in usage and "Workspace b" in usage
    assert "Workspace b" not in a.request("GET", "/dashboard/usage")[2]
    workers = a.request("GET", "/dashboard/workers")[2]
    assert "w1" in workers and "connected" in workers

    # A form without the session's CSRF secret, or from another site, changes nothing.
    assert b.request("POST", f"/dashboard/apps/{dash.b_app}/stop", {"csrf": "forged"})[0] == 403
    assert b.request("POST", f"/dashboard/apps/{dash.b_app}/stop", {"csrf": b.csrf()},
                     {"origin": "http://evil.example"})[0] == 403
    assert "logger" in cli(dash.b_env, "app", "list")

    # Logging out ends the session on the server: its cookie opens nothing any more.
    assert b.request("POST", "/dashboard/logout", {"csrf": b.csrf()})[0] == 303
    assert b.request("GET", "/dashboard/")[0] == 303
    # So does revoking its token.
    a_csrf = a.csrf()
    cli(dash.env, "token", "revoke", dash.main["token_id"])
    assert a.request("GET", "/dashboard/")[0] == 303
    assert a.request("POST", "/dashboard/logout", {"csrf": a_csrf})[0] == 401


@run_async
async def test_a_session_lasts_its_hours_then_ends(tmp_path):
    store = open_store(tmp_path / "ember.db")
    try:
        identity = Identity(store)
        identity.bootstrap(tmp_path)
        admin = json.loads((tmp_path / "admin-token.json").read_text())
        now = [1000.0]
        sessions = Sessions(identity, clock=lambda: now[0])
        sid, session = sessions.login(admin["token_id"], admin["token_secret"])
        now[0] += SESSION_HOURS * 3600 - 1
        assert sessions.get(sid) is session
        now[0] += 1
        assert sessions.get(sid) is None and sessions.get(sid) is None  # and forgotten
        assert sessions.get(None) is None and sessions.get("made-up") is None
    finally:
        store.close()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package): the browser tests need it")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def streams_open(dash) -> int:
    status, _, body = Http(dash.web_url).request("GET", "/metrics")
    assert status == 200, body
    return int(float(re.search(r"^ember_dashboard_streams (\S+)$", body, re.M).group(1)))


def test_in_a_browser_live_logs_failures_and_stopping_an_app(dash, browser):
    shots = os.environ.get("EMBER_SCREENSHOTS")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())  # the Stop button asks first
    base = dash.dashboard_url
    with dash_app.app.run():
        app_id = dash_app.app.app_id
        with pytest.raises(ValueError, match="boom: on purpose"):
            dash_app.fail.remote("on purpose")
        assert dash_app.talk.remote(1, 0) == 1

        page.goto(base + "/")
        page.fill("input[name=token_id]", dash.admin["token_id"])
        page.fill("input[name=token_secret]", dash.admin["token_secret"])
        page.click("button[type=submit]")
        page.wait_for_url(base + "/dashboard/")
        row = page.locator("tr", has_text=app_id)
        row.wait_for()
        # The attack: a script on the gateway's origin (pages of web endpoints and tunnels, which
        # users write, are served there) fetches dashboard pages with this browser's session.
        # The dashboard's origin is another, so it reads nothing (a script on its own would).
        read = "u => fetch(u, {credentials: 'include'}).then(r => r.text()).catch(e => 'refused: ' + e)"
        assert app_id in page.evaluate(read, base + "/dashboard/")
        page.goto(dash.web_url + "/healthz")
        for url in (dash.web_url + "/dashboard/", base + "/dashboard/"):
            got = page.evaluate(read, url)
            assert got.startswith("refused: TypeError") and app_id not in got, (url, got)
        page.goto(base + "/dashboard/")
        assert "ephemeral" in row.inner_text() and "dash" in row.inner_text()

        # The app's page: its functions' figures, live; its failed input's traceback.
        page.click(f"a[href='/dashboard/apps/{app_id}']")
        page.locator("td", has_text="talk").first.wait_for()
        failure = page.locator(".failure", has_text="boom: on purpose")
        assert "ValueError: boom: on purpose" in failure.locator("pre.traceback").inner_text()
        assert 'raise ValueError(f"boom: {why}")' in failure.inner_text()
        # The failed call's page: its input, failed, with its traceback.
        page.locator("tr:has(a[href^='/dashboard/calls/'])", has_text="fail").locator("a").click()
        page.locator("td", has_text="failure").wait_for()
        assert "ValueError: boom: on purpose" in page.locator("pre.traceback").inner_text()
        page.go_back()
        talk_row = page.locator("tr", has_text="talk").first
        done = dash_app.talk.spawn(2, 0)
        done.get()
        wait_for(lambda: talk_row.locator("td").nth(7).inner_text() == "2", what="the succeeded count to move live")
        # A call's lines, found by the call.
        admin = Http(base).login(dash.admin)
        of_call = f"/dashboard/logs?app={app_id}&call={done.object_id}"
        wait_for(lambda: "line 1 of 2" in admin.request("GET", of_call)[2], what="the call's lines")
        only = admin.request("GET", of_call)[2]
        assert "line 0 of 2" in only and "line 0 of 1" not in only
        if shots:
            _shoot(page, shots, "function")

        # The logs page, open before the call: its lines arrive as they are printed.
        page.goto(f"{base}/dashboard/logs?app={app_id}&function=talk")
        page.locator(".line", has_text="line 0 of 1").wait_for()
        assert page.locator(".log").get_attribute("data-log-events")
        opened = streams_open(dash)
        assert opened >= 1
        result = {}
        caller = threading.Thread(target=lambda: result.setdefault("n", dash_app.talk.remote(4, 0.6)))
        caller.start()
        page.locator(".line", has_text="line 1 of 4").wait_for()
        assert page.locator(".line", has_text="line 3 of 4").count() == 0  # not yet printed: live, not at the end
        page.locator(".line", has_text="line 3 of 4").wait_for()
        caller.join(60)
        assert result == {"n": 4}
        # HTML in a log line is text: shown as it is, run never.
        line = page.locator(".line", has_text="not bold").last
        line.wait_for()
        assert "<script>window.pwned = 'log'</script> <b>not bold</b>" in line.inner_text()
        assert page.locator(".log b, .log script").count() == 0
        if shots:
            _shoot(page, shots, "logs")

        # An app whose name is HTML, and its log line.
        with dash_app.evil.run():
            assert dash_app.hello.remote() == "hi"
            page.goto(base + "/dashboard/")
            page.locator("td", has_text="<script>window.pwned = 'app'</script>").wait_for()
            page.goto(f"{base}/dashboard/logs?app={dash_app.evil.app_id}")
            page.locator(".line", has_text="onerror").wait_for()
            assert page.locator(".log img").count() == 0
        assert page.evaluate("window.pwned") is None

        if shots:
            for name in ("containers", "workers", "usage", "objects"):
                page.goto(f"{base}/dashboard/{name}")
                _shoot(page, shots, name)

        # Stop the app from its row on the apps page: it is stopped, as the SDK sees.
        page.goto(base + "/dashboard/")
        if shots:
            _shoot(page, shots, "apps")
        page.locator("tr", has_text=app_id).locator("button", has_text="Stop").click()
        page.wait_for_url(base + "/dashboard/")
        wait_for(lambda: page.locator("tr", has_text=app_id).count() == 0, what="the stopped app to leave the list")
        assert app_id not in cli(dash.env, "app", "list")
        with pytest.raises(ember.exception.Error):
            dash_app.talk.remote(1, 0)
        # Its containers ended, and say why.
        page.goto(base + "/dashboard/containers")
        ended = page.locator("tr", has_text="talk").filter(has=page.locator(f"a[href='/dashboard/apps/{app_id}']"))
        ended.first.wait_for()
        print("exit cause shown:", ended.first.inner_text())
    context.close()
    # Closing the pages ended their streams on the server.
    wait_for(lambda: streams_open(dash) == 0, what="the event streams to end with their pages")


def _shoot(page, directory: str, name: str):
    path = pathlib.Path(directory) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
