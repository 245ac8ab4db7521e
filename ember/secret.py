"""ember.Secret: environment variables for a function's containers, kept encrypted by the
control plane.

    @app.function(secrets=[ember.Secret.from_name("openai", required_keys=["OPENAI_API_KEY"])])
    def f(): os.environ["OPENAI_API_KEY"]

Named secrets are made with `ember secret create NAME KEY=VALUE ...`; `from_dict`,
`from_dotenv` and `from_local_environ` make anonymous ones from what the caller has.
"""

import os
import pathlib

from . import config, exception
from ._client.client import Client
from .proto import api_pb2


class Secret:
    def __init__(self, *, name: str | None = None, env: dict[str, str] | None = None, required_keys=()):
        self._name = name
        self._env = env
        self._required = list(required_keys)

    def __repr__(self):  # never the values
        return f"<ember.Secret {self._name or f'({len(self._env or {})} variables)'}>"

    @staticmethod
    def from_name(name: str, *, required_keys: list[str] = (), environment_name: str | None = None) -> "Secret":
        config.check_environment(environment_name, f"Secret.from_name({name!r})")
        if not isinstance(name, str) or not name:
            raise exception.InvalidError(f"Secret.from_name({name!r}): pass the secret's name")
        if isinstance(required_keys, str) or not all(isinstance(k, str) for k in required_keys):
            raise exception.InvalidError(f"required_keys={required_keys!r}: pass a list of variable names")
        return Secret(name=name, required_keys=required_keys)

    @staticmethod
    def from_dict(env_dict: dict[str, str | None]) -> "Secret":
        if not isinstance(env_dict, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                     for k, v in env_dict.items()):
            raise exception.InvalidError("Secret.from_dict: pass a dict of string names to string values")
        return Secret(env={k: v for k, v in env_dict.items() if v is not None})

    @staticmethod
    def from_local_environ(env_keys: list[str]) -> "Secret":
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise exception.InvalidError(f"Secret.from_local_environ: {', '.join(missing)} not set in this environment")
        return Secret(env={k: os.environ[k] for k in env_keys})

    @staticmethod
    def from_dotenv(path=None, *, filename: str = ".env") -> "Secret":
        """The variables of a .env file: `path` is the file or its directory (default: here)."""
        p = pathlib.Path(path) if path is not None else pathlib.Path.cwd()
        if p.is_dir():
            p = p / filename
        try:
            text = p.read_text()
        except OSError as e:
            raise exception.InvalidError(f"Secret.from_dotenv: cannot read {p}: {e.strerror}") from None
        return Secret(env=parse_dotenv(text))

    async def _resolve(self, client: Client) -> str:
        """The secret's id on the control plane, at each app start: looked up by name (it may
        have changed since), or created from the values."""
        if self._name is not None:
            ref = await client.rpc("SecretLookup", api_pb2.SecretLookupRequest(
                name=self._name, required_keys=self._required), what=f"secret {self._name}")
        else:
            ref = await client.rpc("SecretCreate", api_pb2.SecretCreateRequest(env=self._env))
        return ref.secret_id


def parse_dotenv(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env[key.strip()] = value
    return env
