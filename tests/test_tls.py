"""TLS between clients, workers, containers and the control plane, and the client's profiles:
real servers and workers on loopback, real `ember` commands."""

import hashlib
import os
import re
import socket
import ssl
import stat
import subprocess

import pytest
from conftest import PY, Cluster, container_backend_missing, free_port, run_py, wait_for

from ember.server import tls

CALL_AND_FETCH = """
import ssl, urllib.request
import tls_app
with tls_app.app.run():
    print("square", tls_app.square.remote(7))
    print("by call", tls_app.square_by_call.remote(5))
    url = tls_app.web.get_web_url()
    print("url", url)
    ctx = ssl.create_default_context(cafile={ca!r})
    with urllib.request.urlopen(url, context=ctx, timeout=60) as resp:
        print("scheme", resp.read().decode())
"""

CONNECT = "import tls_app\nwith tls_app.app.run():\n    pass\n"


def client_env(c: Cluster, url: str | None = None, ca=None) -> dict:
    """The environment of a client of c (with its admin token), at url (default: c's)."""
    env = dict(c.env, EMBER_SERVER_URL=url or c.url)
    if ca is not None:
        env["EMBER_CA_CERT"] = str(ca)
    return env


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A control plane with `--tls auto`, and a process-backend worker that trusts its CA."""
    c = Cluster(tmp_path_factory.mktemp("tls"))
    c.start_server(["--tls", "auto"])
    c.start_worker(env={"EMBER_CA_CERT": str(c.ca_file)})
    yield c
    c.stop()


def test_auto_tls_made_a_ca_and_prints_its_fingerprint(tls_cluster):
    c = tls_cluster
    wait_for(lambda: "fingerprint" in c.log(), what="the server to print its CA")
    pem = c.ca_file.read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    expected = hashlib.sha256(der).hexdigest().upper()
    printed = re.search(r"EMBER_CA_CERT=(\S+) \(SHA-256 fingerprint ([0-9A-F:]+)\)", c.log())
    assert printed and printed[1] == str(c.ca_file) and printed[2].replace(":", "") == expected
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((c.ca_file.parent / key).stat().st_mode) == 0o600


def test_client_with_the_ca_runs_functions_and_reaches_web_endpoints_over_https(tls_cluster):
    c = tls_cluster
    assert c.url.startswith("https://")
    out = run_py(CALL_AND_FETCH.format(ca=str(c.ca_file)), client_env(c, ca=c.ca_file))
    assert out.returncode == 0, out.stderr + c.log() + c.log("worker-w1")
    assert "square 49" in out.stdout and "by call 25" in out.stdout
    assert f"url {c.web_url}/tls-scheme-dev" in out.stdout and c.web_url.startswith("https://")
    assert "scheme https" in out.stdout


def test_a_wrong_ca_is_refused_naming_the_cause_and_the_fix(tls_cluster, tmp_path):
    c = tls_cluster
    other = tls.auto(tmp_path / "other", [])  # a CA that did not sign the server's certificate
    out = run_py(CONNECT, client_env(c, ca=other.ca_file))
    assert out.returncode != 0
    assert "certificate at 127.0.0.1" in out.stderr and "is not trusted" in out.stderr, out.stderr
    assert "EMBER_CA_CERT" in out.stderr and str(other.ca_file) in out.stderr
    # A worker with the wrong CA says so too, instead of waiting in silence.
    c.start_worker("wrong-ca", env={"EMBER_CA_CERT": str(other.ca_file)})
    wait_for(lambda: "is not trusted" in c.log("worker-wrong-ca"), what="the worker to say why it cannot connect")


def test_no_ca_at_all_is_not_trusted_either(tls_cluster):
    out = run_py(CONNECT, client_env(tls_cluster))  # conftest: no profile gives a CA either
    assert out.returncode != 0 and "is not trusted" in out.stderr and "system's CA certificates" in out.stderr


def test_a_plaintext_url_to_a_tls_server_says_to_use_https(tls_cluster):
    c = tls_cluster
    out = run_py(CONNECT, client_env(c, f"http://127.0.0.1:{c.port}", c.ca_file))
    assert out.returncode != 0
    assert "speaks TLS" in out.stderr and f"https://127.0.0.1:{c.port}" in out.stderr, out.stderr


def test_a_tls_url_to_a_plaintext_server_says_it_does_not_speak_tls(tmp_path):
    c = Cluster(tmp_path)
    c.start_server()
    try:
        out = run_py(CONNECT, client_env(c, f"https://127.0.0.1:{c.port}"))
        assert out.returncode != 0 and "does not speak TLS" in out.stderr, out.stderr
    finally:
        c.stop()


def ember(*args, env=None, timeout=60):
    return subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), check=False)


def test_listening_beyond_loopback_needs_tls_or_insecure(tmp_path):
    args = ["server", "--host", "0.0.0.0", "--port", str(free_port()), "--http", f"127.0.0.1:{free_port()}",
            "--data-dir", str(tmp_path / "server")]
    out = ember(*args)
    assert out.returncode == 1
    assert out.stderr.startswith("ember: the server would listen on 0.0.0.0 without TLS")
    assert "--tls auto" in out.stderr and "--insecure" in out.stderr
    # With --insecure it starts, and warns.
    log = open(tmp_path / "insecure.log", "wb")
    server = subprocess.Popen([PY, "-m", "ember.cli.main", *args, "--insecure"], stdout=log, stderr=log)
    try:
        wait_for(lambda: "listening on" in (tmp_path / "insecure.log").read_text(), what="the server to start")
        assert "WITHOUT TLS" in (tmp_path / "insecure.log").read_text()
    finally:
        server.terminate()
        server.wait(10)


def test_auto_tls_listening_everywhere_is_trusted_at_the_address_other_machines_reach(tmp_path):
    # The machine's address on its default route, as the kernel says: what a worker on another
    # machine most likely connects to (the host name may resolve to loopback alone).
    route = subprocess.run(["ip", "-4", "route", "get", "203.0.113.1"], capture_output=True, text=True)
    if route.returncode != 0:
        pytest.skip(f"no IPv4 default route here: {route.stderr.strip()}")
    address = re.search(r"\bsrc (\S+)", route.stdout)[1]
    c = Cluster(tmp_path, host="0.0.0.0")
    c.start_server(["--tls", "auto"])
    try:
        ctx = ssl.create_default_context(cafile=str(c.ca_file))
        with socket.create_connection((address, c.port), timeout=10) as sock:
            with ctx.wrap_socket(sock, server_hostname=address) as conn:  # checks the name too
                assert conn.version()
        # And the gateway, listening everywhere too, names the machine in web endpoints' URLs.
        assert f"web endpoints at https://{socket.gethostname()}:{c.http_port}" in c.log()
    finally:
        c.stop()


@pytest.mark.skipif(bool(container_backend_missing()), reason=f"container backend: {container_backend_missing()}")
def test_containers_reach_a_tls_control_plane_directly_and_through_the_relay(tmp_path):
    c = Cluster(tmp_path)
    c.start_server(["--tls", "auto"])
    c.start_worker(backend="container", env={"EMBER_CA_CERT": str(c.ca_file)})
    try:
        code = ("import tls_app\nwith tls_app.app.run():\n"
                "    print(tls_app.square_by_call.remote(3), tls_app.square_offline.remote(4))\n")
        out = run_py(code, client_env(c, ca=c.ca_file), timeout=300)
        assert out.returncode == 0, out.stderr + c.log("worker-w1")
        assert out.stdout.splitlines()[-1] == "9 16"
    finally:
        c.stop()


def test_profiles_token_set_list_and_activate(tmp_path):
    cfg = tmp_path / "ember.toml"
    env = {"EMBER_CONFIG_PATH": str(cfg)}
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    out = ember("token", "set", "--token-id", "tk-one", "--token-secret", "secret-one", "--server",
                "https://one.example:7070", "--ca-cert", str(ca), env=env)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    out = ember("token", "set", "--profile", "two", "--token-id", "tk-two", "--token-secret", "secret-two",
                "--server", "https://two.example:7070", "--no-activate", env=env)
    assert out.returncode == 0, out.stderr
    out = ember("profile", "list", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["*\tdefault\thttps://one.example:7070", " \ttwo\thttps://two.example:7070"]
    assert "secret" not in out.stdout

    show = ("from ember import config\n"
            "print(config.server_url(), config.token(), config.ca_cert_path())")
    clean = {k: "" for k in ("EMBER_SERVER_URL", "EMBER_TOKEN_ID", "EMBER_TOKEN_SECRET", "EMBER_CA_CERT",
                             "EMBER_PROFILE")}
    assert run_py(show, clean | env).stdout.strip() == f"https://one.example:7070 ('tk-one', 'secret-one') {ca}"

    out = ember("profile", "activate", "two", env=env)
    assert out.returncode == 0, out.stderr
    assert ember("profile", "list", env=env).stdout.splitlines()[1].startswith("*\ttwo")
    assert run_py(show, clean | env).stdout.strip() == "https://two.example:7070 ('tk-two', 'secret-two') None"
    # EMBER_PROFILE overrides the active one, and the environment overrides any profile.
    picked = run_py(show, clean | env | {"EMBER_PROFILE": "default"}).stdout.strip()
    assert picked.startswith("https://one.example:7070 ('tk-one'")
    overridden = run_py(show, clean | env | {"EMBER_SERVER_URL": "https://env:1", "EMBER_TOKEN_ID": "tk-env",
                                             "EMBER_TOKEN_SECRET": "s-env"}).stdout.strip()
    assert overridden == "https://env:1 ('tk-env', 's-env') None"

    out = ember("profile", "activate", "three", env=env)
    assert out.returncode == 1
    assert out.stderr.startswith("ember: no profile named 'three'") and "profiles: default, two" in out.stderr

    cfg.write_text("[default\nserver_url = 1\n")
    out = ember("profile", "list", env=env)
    assert out.returncode == 1 and out.stderr.startswith(f"ember: the Ember config file {cfg} is not valid TOML")
