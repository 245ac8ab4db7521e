"""Secrets: created by name or from local values, given to containers as environment
variables, encrypted at rest, never shown, and missing ones caught before anything runs."""

import hashlib
import os
import sqlite3
import subprocess
import sys

import pytest

import ember
from ember import exception
from conftest import ROOT

import secrets_app

TOKEN = "tok-9f8e7d6c5b4a"  # a value that must not leak anywhere


def ember_cli(*args):
    return subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


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
    db = sqlite3.connect(data / "ember.db")
    assert not any(TOKEN.encode() in bytes(row[0]) for row in db.execute("SELECT ciphertext FROM secrets"))
    db.close()
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
