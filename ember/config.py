"""Settings read from the environment and the config file, in one place.

A client finds its control plane, its token and the CA certificate it trusts in the
environment (EMBER_SERVER_URL, EMBER_TOKEN_ID and EMBER_TOKEN_SECRET, EMBER_CA_CERT) or else
in the active profile of its config file, `~/.ember.toml` (EMBER_CONFIG_PATH elsewhere): TOML,
one table per profile, as Modal's `~/.modal.toml`. EMBER_PROFILE picks a profile over the one
marked `active = true`.
"""

import os
import pathlib
import re
import socket
import ssl
import tomllib

import grpc

from . import exception

# Payloads larger than this travel through the blob store instead of inside messages.
BLOB_THRESHOLD = 2 * 1024 * 1024
# gRPC message ceiling: above the blob threshold, with room for the rest of a message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
BLOB_CHUNK = 1024 * 1024

PROFILE_KEYS = {"server_url": str, "token_id": str, "token_secret": str, "ca_cert": str, "active": bool}
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a bare TOML key: no quoting needed when written


def ember_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("EMBER_HOME") or pathlib.Path.home() / ".ember")


# ---------------------------------------------------------------------------- the config file

def config_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("EMBER_CONFIG_PATH") or pathlib.Path.home() / ".ember.toml").expanduser()


def read_profiles() -> dict[str, dict]:
    """The config file's profiles by name ({} without a file); a malformed file is an error naming it."""
    path = config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise exception.InvalidError(f"cannot read the Ember config file {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise exception.InvalidError(f"the Ember config file {path} is not valid TOML ({e}): fix it, or remove it "
                                     "and add profiles again with `ember token set`") from None
    for name, profile in data.items():
        if not isinstance(profile, dict):
            raise exception.InvalidError(f"the Ember config file {path} has {name!r} at the top level: it holds only "
                                         f"profiles, one table each, like [{name}]")
        for key, value in profile.items():
            kind = PROFILE_KEYS.get(key)
            if kind is None:
                raise exception.InvalidError(f"the Ember config file {path}: profile {name!r} has an unknown key "
                                             f"{key!r} (known: {', '.join(PROFILE_KEYS)})")
            if not isinstance(value, kind):
                raise exception.InvalidError(f"the Ember config file {path}: {name}.{key} must be a "
                                             f"{'boolean' if kind is bool else 'string'}")
    return data


def write_profiles(profiles: dict[str, dict]):
    """Replace the config file with these profiles, readable by its owner only (it holds secrets)."""
    path = config_path()
    lines = []
    for name, profile in profiles.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in profile.items() if value is not None]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)  # whole or not at all: a reader never sees half a file


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    # A TOML basic string: backslash, quote and control characters escaped.
    escaped = "".join(c if c not in '"\\' and ord(c) >= 0x20 and ord(c) != 0x7f else f"\\u{ord(c):04x}"
                      for c in str(value))
    return f'"{escaped}"'


def active_profile_name(profiles: dict[str, dict]) -> str | None:
    """EMBER_PROFILE, else the profile marked active, else one named "default"; None if none applies."""
    chosen = os.environ.get("EMBER_PROFILE")
    if chosen:
        if chosen not in profiles:
            raise exception.NotFoundError(
                f"EMBER_PROFILE is {chosen!r}, but {config_path()} has no such profile "
                f"(profiles: {', '.join(profiles) or 'none'}); add it with `ember token set --profile {chosen} ...`")
        return chosen
    for name, profile in profiles.items():
        if profile.get("active"):
            return name
    return "default" if "default" in profiles else None


def _profile_value(key: str) -> str | None:
    profiles = read_profiles()
    name = active_profile_name(profiles)
    return (profiles[name].get(key) or None) if name else None


def server_url() -> str | None:
    """The control plane the client talks to; None means: start an embedded one."""
    return os.environ.get("EMBER_SERVER_URL") or _profile_value("server_url")


def check_environment(environment_name: str | None, where: str):
    """Modal's `environment_name=` (and `-e/--env`): Ember has no environments, and says so
    rather than ignore one. Its namespaces are workspaces, chosen by the token."""
    if environment_name:
        raise exception.InvalidError(
            f"{where}: environment_name={environment_name!r}: Ember has no environments; its namespaces are "
            "workspaces, and the token chooses one (EMBER_TOKEN_ID/EMBER_TOKEN_SECRET, or `ember profile activate`). "
            "Leave environment_name out.")


def token() -> tuple[str, str] | None:
    """The client's token (id, secret): from EMBER_TOKEN_ID and EMBER_TOKEN_SECRET, else the profile's."""
    env = os.environ.get("EMBER_TOKEN_ID"), os.environ.get("EMBER_TOKEN_SECRET")
    if all(env):
        return env
    token_id, secret = _profile_value("token_id"), _profile_value("token_secret")
    return (token_id, secret) if token_id and secret else None


def ca_cert_path() -> str | None:
    """The CA certificate (PEM file) that TLS servers are checked against; None: the system's CAs."""
    return os.environ.get("EMBER_CA_CERT") or _profile_value("ca_cert")


# ---------------------------------------------------------------------------- channels

def is_tls(url: str) -> bool:
    return url.startswith(("https://", "grpcs://"))


def grpc_target(url: str) -> str:
    """Turn an Ember server URL into a gRPC target.

    Accepts host:port, grpc:// and http:// (plaintext), grpcs:// and https:// (TLS), and
    unix:/path (or unix:///path).
    """
    if url.startswith("unix:"):
        return url
    for scheme in ("grpcs://", "https://", "grpc://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    return url.rstrip("/")


def host_and_port(url: str) -> tuple[str, int]:
    """The host (an IPv6 address without its brackets) and port of a TCP server's URL; ValueError
    if it names no port."""
    host, _, port = grpc_target(url).rpartition(":")
    return host.strip("[]"), int(port)


GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
    # Keep idle streams (workers, containers, the call stream) alive through NATs and idling.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

# Every server accepts those pings, and the one-second pings of clients and workers given several
# addresses (SEVERAL_KEEPALIVE in _client/servers.py, to give up a leader that stopped answering):
# by gRPC's defaults a server sends GOAWAY ("too_many_pings") to a client that pings an idle
# connection more often than every five minutes, failing the streams on it.
SERVER_OPTIONS = [*GRPC_OPTIONS, ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
                  ("grpc.http2.max_ping_strikes", 0)]


def ca_pem() -> bytes | None:
    """The PEM of the CAs a TLS server must be signed by: ca_cert_path()'s, else the system's
    bundle (None: gRPC's own roots, where the system has no bundle)."""
    path = ca_cert_path()
    if path:
        try:
            return pathlib.Path(path).expanduser().read_bytes()
        except OSError as e:
            raise exception.InvalidError(f"the CA certificate {path} (EMBER_CA_CERT, or the profile's ca_cert) cannot "
                                         f"be read: {e.strerror}") from None
    system = ssl.get_default_verify_paths().cafile
    return pathlib.Path(system).read_bytes() if system and os.path.exists(system) else None


def open_channel(url: str, options: list[tuple] = ()) -> grpc.aio.Channel:
    """A channel to the control plane at `url`: TLS for https:// and grpcs:// URLs, checked
    against ca_pem(); plaintext otherwise. options replace those of GRPC_OPTIONS they name.

    EMBER_TLS_SERVER_NAME (a container's) is the name the server's certificate is checked
    against, whatever address reaches it: the container's gateway, translated to the control
    plane, or a unix socket that is a byte relay to it (TLS runs through it end to end; a unix
    socket is plaintext otherwise).
    """
    target = grpc_target(url)
    server_name = os.environ.get("EMBER_TLS_SERVER_NAME")
    options = list((dict(GRPC_OPTIONS) | dict(options)).items())
    if not is_tls(url) and not (server_name and url.startswith("unix:")):
        return grpc.aio.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca_pem()), options=options)


def transport() -> str:
    """How the hot streams travel (EMBER_TRANSPORT): "frames", the frame transport where the
    control plane serves it (ember/_transport.py), the default; or "grpc"."""
    chosen = os.environ.get("EMBER_TRANSPORT", "frames")
    if chosen not in ("frames", "grpc"):
        raise exception.InvalidError(f"EMBER_TRANSPORT={chosen!r}: set it to 'frames' (the default) or 'grpc'")
    return chosen


def in_container() -> bool:
    """Whether this process runs in a container (its runtime, or the code it runs)."""
    return bool(os.environ.get("EMBER_CONTAINER_ID"))


def container_frames() -> str | None:
    """Where a container reaches the frame transport, as its worker says (EMBER_FRAMES:
    "HOST:PORT", or "unix:PATH" of a socket the worker relays, worker/frames.py); None: nowhere
    (gRPC only). Not asked of the control plane: a container's address of it is a relay or a
    translation of gRPC's port alone (worker/container.py), and another port could hang."""
    return os.environ.get("EMBER_FRAMES") or None


# OpenSSL's verify codes for a certificate that is trusted but names another host.
X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH = 62, 64


def tls_problem(url: str, timeout: float = 3.0) -> str | None:
    """Why a TLS mismatch keeps `url` from connecting, as a message with the fix; None if it is
    not that (or the server cannot be reached at all). A blocking probe: for after a failure."""
    if url.startswith("unix:"):
        return None
    try:
        host, port = host_and_port(url)
        sock = socket.create_connection((host, port), timeout=timeout)
    except (OSError, ValueError):
        return None
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["h2"])
    if is_tls(url):
        pem = ca_pem()
        if pem is not None:
            ctx = ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
            ctx.set_alpn_protocols(["h2"])
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with sock:
        try:
            ctx.wrap_socket(sock, server_hostname=host).close()
        except ssl.SSLCertVerificationError as e:
            if e.verify_code in (X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH):
                return (f"the server's certificate at {host}:{port} is not valid for the name {host!r} "
                        f"({e.verify_message}): connect by a name it holds, or give the server a certificate for "
                        f"{host} (`ember server --tls auto` names the hosts it listens on)")
            where = ca_cert_path()
            trusted = f"the CA certificate {where}" if where else "the system's CA certificates"
            return (f"the server's certificate at {host}:{port} is not trusted ({e.verify_message}; checked "
                    f"against {trusted}): set EMBER_CA_CERT (or the profile's ca_cert, `ember token set --ca-cert "
                    "FILE`) to the CA certificate the server uses (`ember server --tls auto` prints its path)")
        except (ssl.SSLError, OSError):
            if is_tls(url):
                return (f"the server at {host}:{port} does not speak TLS: connect with http://{host}:{port}, or start "
                        "it with `--tls auto` (or --tls-cert and --tls-key)")
            return None
    if not is_tls(url):
        return (f"the server at {host}:{port} speaks TLS, and {url} is a plaintext URL: connect with "
                f"https://{host}:{port} (and EMBER_CA_CERT set to its CA certificate)")
    return None
