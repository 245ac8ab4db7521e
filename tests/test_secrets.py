"""Secrets: created by name or from local values, given to containers as environment
variables, encrypted at rest, never shown, and missing ones caught before anything runs."""

import hashlib
import os
import subprocess
import sys

import pytest

import ember
from ember import exception
from conftest import ROOT, dead, on_both_stores, wait_for

import secrets_app

TOKEN = "tok-9f8e7d6c5b4a"  # a value that must not leak anywhere


def ember_cli(*args):
    return subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@on_both_stores()
def test_secrets_reach_the_container_and_nothing_else(cluster):
    created = ember_cli("secret", "create", "api", f"TOKEN={TOKEN}", "REGION=eu")
    assert created.returncode == 0 and TOKEN not in created.stdout
    again = ember_cli("secret", "create", "api", "TOKEN=x")
    assert again.returncode == 1 and "exists already" in again.stderr and "--force" in again.stderr
    with secrets_app.app.run():
        token_hash = hashlib.sha256(TOKEN.encode()).hexdigest()
        assert secrets_app.read_env.remote() == {"TOKEN": token_hash, "REGION": "eu", "MODE": "test"}
    listing = ember_cli("secret", "list")
    assert "api\t2 keys" in listing.stdout and TOKEN not in listing.stdout
    # Encrypted at rest: the value is nowhere in the database or the logs; the key file is 0600.
    data = cluster.tmp / "server"
    assert not any(TOKEN.encode() in bytes(row[0]) for row in cluster.query("SELECT ciphertext FROM secrets"))
    for path in [data / "ember.db", data / "ember.db-wal"] + list(cluster.logs.glob("*.log")):
        if path.exists():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert os.stat(data / "secret.key").st_mode & 0o777 == 0o600
    assert ember_cli("secret", "delete", "api").returncode == 0
    assert ember_cli("secret", "delete", "api").returncode == 1


def test_a_missing_secret_or_key_fails_before_any_container_starts(cluster):
    with pytest.raises(exception.NotFoundError, match="no secret named 'api'"):
        with secrets_app.app.run():
            pass
    ember_cli("secret", "create", "api", "REGION=eu")
    with pytest.raises(exception.InvalidError, match="lacks the required keys TOKEN"):
        with secrets_app.app.run():
            pass
    assert "starting container" not in cluster.log()


def test_secrets_from_local_values(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text('# comment\nexport A=1\nB="two words"\nC=3 # trailing\n')
    assert ember.Secret.from_dotenv(tmp_path)._env == {"A": "1", "B": "two words", "C": "3"}
    monkeypatch.setenv("EMBER_TEST_LOCAL", "here")
    assert ember.Secret.from_local_environ(["EMBER_TEST_LOCAL"])._env == {"EMBER_TEST_LOCAL": "here"}
    with pytest.raises(exception.InvalidError, match="NOPE_NOT_SET"):
        ember.Secret.from_local_environ(["NOPE_NOT_SET"])
    assert "here" not in repr(ember.Secret.from_dict({"K": "here"}))
    with pytest.raises(exception.InvalidError):
        ember.App("x").function(secrets=["not a secret"])


ROTATING_APP = """
import os
import ember

app = ember.App("rotator")


@app.function(secrets=[ember.Secret.from_name("rot")], scaledown_window=1)
def read():
    return os.environ.get("VALUE"), os.getpid()
"""


@on_both_stores()
def test_a_deployed_function_follows_its_secret_through_updates_and_deletion(cluster, tmp_path):
    (tmp_path / "rotator.py").write_text(ROTATING_APP)
    assert ember_cli("secret", "create", "rot", "VALUE=one").returncode == 0
    deployed = ember_cli("deploy", str(tmp_path / "rotator.py"))
    assert deployed.returncode == 0, deployed.stderr
    read = ember.Function.from_name("rotator", "read")

    def next_container(pid):
        """The value a new container of read() sees, once the one of pid has scaled down."""
        wait_for(lambda: dead(pid), what=f"container {pid} to scale down")
        value, new_pid = read.remote()
        assert new_pid != pid
        return value, new_pid

    value, pid = read.remote()
    assert value == "one"
    # Rotated with the CLI: the same secret to the deployed function, its new values in new containers.
    rotated = ember_cli("secret", "create", "rot", "VALUE=two", "--force")
    assert rotated.returncode == 0, rotated.stderr
    value, pid = next_container(pid)
    assert value == "two"

    # Deleted: the next cold start fails the call, naming the secret and the fix.
    assert ember_cli("secret", "delete", "rot").returncode == 0
    wait_for(lambda: dead(pid), what=f"container {pid} to scale down")
    with pytest.raises(exception.InitError, match=r"secret 'rot' was deleted: create it again with "
                                                  r"`ember secret create rot KEY=VALUE \.\.\.`"):
        read.remote()
    assert "secret 'rot' was deleted" in cluster.log()
    # Made again under its name, it is the same secret: the function works again, with no redeploy.
    assert ember_cli("secret", "create", "rot", "VALUE=three").returncode == 0
    assert read.remote()[0] == "three"
    assert "rot\t1 keys" in ember_cli("secret", "list").stdout
