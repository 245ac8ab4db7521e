"""Web endpoints through the control plane's HTTP gateway: every kind, streaming, WebSockets,
fan-out and concurrency, proxy auth, crashes, and stable URLs across deploys and `ember serve`."""

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
import websockets
from conftest import APPS, PY, ROOT, free_port, module_cluster, run_py, wait_for


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A cluster with web_app's app running; yields (cluster, the app module)."""
    import web_app
    with module_cluster(tmp_path_factory.mktemp("web"), cpu=16) as c, web_app.app.run():
        yield c, web_app


def test_fastapi_query_parameters_become_arguments(web):
    c, app = web
    url = app.square.get_web_url()
    assert url == f"{c.web_url}/webtest-square-dev"
    status, _, body = http("GET", url + "?x=7")  # the first request waits for a cold start
    assert status == 200 and json.loads(body) == {"result": 49}
    assert json.loads(http("GET", url + "?x=3&label=sq")[2]) == {"sq": 9}
    status, _, body = http("GET", url + "?x=seven")  # FastAPI's own validation error
    assert status == 422 and b"int" in body


def test_fastapi_post_json_body_and_docs(web):
    _, app = web
    url = app.echo.get_web_url()
    status, _, body = http("POST", url, json.dumps({"a": [1, 2]}).encode(), {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["got"] == {"a": [1, 2]}
    assert http("GET", url)[0] == 405  # only POST
    status, _, body = http("GET", url + "/openapi.json")
    assert status == 200 and json.loads(body)["paths"]["/"]["post"]


def test_asgi_app_paths_query_body_and_streaming(web):
    c, app = web
    url = app.raw.get_web_url()
    assert url == f"{c.web_url}/raw-dev"
    status, _, body = http("PUT", url + "/a/b?k=v", b"payload")
    assert status == 200 and body.startswith(b"PUT /a/b q=k=v body=payload")
    with urllib.request.urlopen(url + "/stream", timeout=30) as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert [resp.readline() for _ in range(3)] == [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n"]
    # A large body arrives whole (sent in parts by the gateway).
    big = os.urandom(3 << 20).hex().encode()
    status, _, body = http("POST", url + "/echo", big)
    assert status == 200 and body.split(b" body=")[1].startswith(big[:1000])


def test_a_function_passed_to_another_keeps_its_web_url(web):
    _, app = web
    assert app.url_of.remote(app.square) == app.square.get_web_url()


def test_host_names_route_too(web):
    c, _ = web
    status, _, body = http("GET", c.web_url + "/a?b=1", headers={"Host": "raw-dev.localhost"})
    assert status == 200 and body.startswith(b"GET /a q=b=1")


def test_the_client_an_app_sees_is_the_peer_not_a_forwarded_claim(web):
    _, app = web
    status, _, body = http("GET", app.raw.get_web_url() + "/who", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 200 and b" client=127.0.0.1 " in body


def test_container_dying_mid_request_is_a_500_naming_it(web):
    _, app = web
    status, _, body = http("GET", app.raw.get_web_url() + "/die")
    assert status == 500 and b"exit" in body and b"while running this input" in body
    status, _, body = http("GET", app.raw.get_web_url() + "/again")  # a new container answers
    assert status == 200 and body.startswith(b"GET /again")


def test_asgi_websocket(web):
    _, app = web
    ws_url = app.raw.get_web_url().replace("http://", "ws://") + "/ws"

    async def talk():
        async with websockets.connect(ws_url) as ws:
            await ws.send("hello")
            assert await ws.recv() == "echo:hello"
            await ws.send(b"\x01\x02\x03")
            assert await ws.recv() == b"\x03\x02\x01"
            await ws.send("close")
            await ws.wait_closed()
            assert ws.close_code == 1000

    asyncio.run(talk())


def test_crashing_handler_fails_only_its_request(web):
    _, app = web
    url = app.raw.get_web_url()
    status, _, body = http("GET", url + "/crash")
    assert status == 500 and body == b"Internal Server Error"
    # The same container serves on.
    status, _, body = http("GET", url + "/after")
    assert status == 200 and body.startswith(b"GET /after")


def test_concurrent_inputs_share_one_container(web):
    _, app = web
    url = app.raw.get_web_url() + "/wait"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: http("GET", url)[2].decode(), range(8)))
    pids = {b.split("pid=")[1] for b in bodies}
    assert len(pids) == 1  # max_containers=1
    assert max(int(b.split("max_in_flight=")[1].split()[0]) for b in bodies) >= 2


def test_requests_fan_out_over_containers_up_to_max(web):
    _, app = web
    url = app.slow.get_web_url() + "?seconds=1.5"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: http("GET", url), range(6)))
    assert all(status == 200 for status, _, _ in results)
    pids = {json.loads(body)["pid"] for _, _, body in results}
    assert 2 <= len(pids) <= 3  # one input at a time per container, at most max_containers


def test_wsgi_app(web):
    _, app = web
    status, headers, body = http("POST", app.flaskish.get_web_url() + "/x/y?z=1", b"form")
    assert status == 201 and body == b"wsgi POST /x/y q=z=1 body=form"
    assert headers["x-script"] == "/webtest-flaskish-dev"


def test_web_server(web):
    _, app = web
    status, _, body = http("GET", app.files.get_web_url() + "/hello.txt")
    assert status == 200 and body == b"served by a web server\n"
    assert http("GET", app.files.get_web_url() + "/missing")[0] == 404


def test_proxy_auth(web):
    c, app = web
    url = app.private.get_web_url() + "/p"
    status, _, body = http("GET", url)
    assert status == 401 and b"ember proxy-token create" in body
    assert http("GET", url, headers={"Ember-Key": "wk-nope", "Ember-Secret": "nope"})[0] == 401

    def ember_cli(*args, **env):
        out = subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                             env=dict(os.environ, EMBER_SERVER_URL=c.url, **env), timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def proxy_token(**env):
        fields = dict(line.split(": ", 1) for line in ember_cli("proxy-token", "create", **env).splitlines()
                      if ": " in line)
        return fields["Ember-Key"], fields["Ember-Secret"]

    # A proxy token opens the endpoints of its own workspace only.
    ember_cli("workspace", "create", "proxy-other")
    other = json.loads(ember_cli("token", "new", "--workspace", "proxy-other", "--json"))
    key, secret = proxy_token(EMBER_TOKEN_ID=other["token_id"], EMBER_TOKEN_SECRET=other["token_secret"])
    assert http("GET", url, headers={"Ember-Key": key, "Ember-Secret": secret})[0] == 401
    key, secret = proxy_token()
    assert http("GET", url, headers={"Ember-Key": key, "Ember-Secret": secret + "x"})[0] == 401
    status, _, body = http("GET", url, headers={"Ember-Key": key, "Ember-Secret": secret})
    assert status == 200 and body.startswith(b"GET /p")
    # Modal's header names work too.
    assert http("GET", url, headers={"Modal-Key": key, "Modal-Secret": secret})[0] == 200


def test_unknown_endpoint_is_404(web):
    c, _ = web
    status, _, body = http("GET", c.web_url + "/no-such-endpoint/x")
    # Which endpoints exist is not said: their labels name other workspaces' apps.
    assert status == 404 and b"no web endpoint is served" in body and b"raw-dev" not in body


def test_bad_decorators_are_clear_errors():
    import ember
    from ember.exception import InvalidError
    app = ember.App("bad")
    with pytest.raises(InvalidError, match="below @app.function"):
        @ember.fastapi_endpoint()
        @app.function()
        def f():
            pass
    with pytest.raises(InvalidError, match="takes no arguments"):
        @app.function()
        @ember.asgi_app()
        def g(x):
            pass
    with pytest.raises(InvalidError, match="method="):
        ember.fastapi_endpoint(method="FETCH")
    with pytest.raises(InvalidError, match="label="):
        ember.asgi_app(label="Not_OK")
    with pytest.raises(InvalidError, match="max_inputs="):
        ember.concurrent(max_inputs=0)


def test_deployed_endpoint_keeps_its_url_across_versions(cluster, tmp_path):
    src = APPS / "web_deploy.py"
    env = dict(os.environ, EMBER_SERVER_URL=cluster.url, PYTHONPATH=str(ROOT))

    def deploy(version: str):
        (tmp_path / "web_deploy.py").write_text(src.read_text().replace("VERSION", version))
        out = subprocess.run([PY, "-m", "ember.cli.main", "deploy", str(tmp_path / "web_deploy.py")],
                             capture_output=True, text=True, env=env, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    printed = deploy("one")
    url = f"{cluster.web_url}/webdeploy-hello"
    assert url in printed
    assert http("GET", url)[2] == b"version one"
    deploy("two")
    wait_for(lambda: http("GET", url)[2] == b"version two", what="the new version to serve")
    # Looked up by name, from anywhere.
    out = run_py("import ember; print(ember.Function.from_name('webdeploy', 'hello').get_web_url())",
                 {"EMBER_SERVER_URL": cluster.url})
    assert out.stdout.strip() == url, out.stderr
    # Served again after a control-plane restart.
    cluster.kill_server()
    cluster.start_server()
    wait_for(lambda: http("GET", url)[0] == 200, timeout=60, what="the endpoint after a restart")
    assert http("GET", url)[2] == b"version two"


def test_ember_serve_redeploys_on_save(cluster, tmp_path):
    app_file = tmp_path / "served.py"
    src = (APPS / "web_deploy.py").read_text().replace('"webdeploy"', '"served"')
    app_file.write_text(src.replace("VERSION", "one"))
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen([PY, "-m", "ember.cli.main", "serve", str(app_file)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=tmp_path,
                                env=dict(os.environ, EMBER_SERVER_URL=cluster.url, PYTHONPATH=str(ROOT)))
    def output():
        return (tmp_path / "serve.log").read_text()

    url = f"{cluster.web_url}/served-hello-dev"
    try:
        wait_for(lambda: "watching" in output(), timeout=60, what="ember serve to start")
        assert url in output()
        assert http("GET", url)[2] == b"version one"
        app_file.write_text(src.replace("VERSION", "two"))
        wait_for(lambda: "redeployed" in output(), what="a redeploy")
        assert "served.py changed" in output()
        assert http("GET", url)[2] == b"version two"
        # A syntax error is shown; the last good version keeps serving.
        app_file.write_text(src.replace("VERSION", "three") + "\ndef broken(:\n")
        wait_for(lambda: "SyntaxError" in output(), what="the syntax error to show")
        # Said after the error is shown: wait for it rather than read between the two lines.
        wait_for(lambda: "keeps serving" in output(), what="the note that the last version keeps serving")
        assert http("GET", url)[2] == b"version two"
        app_file.write_text(src.replace("VERSION", "four"))
        wait_for(lambda: output().count("redeployed") == 2, what="a redeploy after the fix")
        assert http("GET", url)[2] == b"version four"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, output()
    # Its app is stopped: the URL is no longer served.
    wait_for(lambda: http("GET", url)[0] == 404, what="the endpoint to go away")


def test_request_past_its_timeout_is_504(web):
    _, app = web
    status, _, body = http("GET", app.sleepy.get_web_url())
    assert status == 504 and b"timeout (1s)" in body


def test_class_web_method_shares_the_class_containers(web):
    c, app = web
    url = app.Model().predict.get_web_url()
    assert url == f"{c.web_url}/webtest-model-predict-dev"
    status, _, body = http("POST", url + "?x=2")
    assert status == 200 and json.loads(body)["y"] == 6.0
    # Its other methods are called as usual.
    assert app.Model().scale.remote(5) == 15


def test_a_web_servers_server_stops_with_its_app(cluster, tmp_path):
    """The server a @web_server function started goes when its container does."""
    port = free_port()
    code = (
        "import ember, subprocess, sys, urllib.request\n"
        "app = ember.App('serverstops')\n"
        "@app.function()\n"
        f"@ember.web_server({port})\n"
        "def site():\n"
        f"    subprocess.Popen([sys.executable, '-m', 'http.server', '{port}', '--bind', '127.0.0.1'])\n"
        "with app.run():\n"
        "    print(urllib.request.urlopen(site.get_web_url(), timeout=60).status)\n"
    )
    out = run_py(code, {"EMBER_SERVER_URL": cluster.url}, cwd=tmp_path)
    assert out.stdout.strip().endswith("200"), out.stderr

    def closed():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0

    wait_for(closed, what="the server to stop")
