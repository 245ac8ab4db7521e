"""`ember profile list|activate` and `ember token set`: the client's profiles in its config file
(config.py: `~/.ember.toml`, or EMBER_CONFIG_PATH), each a control plane and a token to use it with."""

import os
import pathlib
import sys

from .. import config, exception
from .output import Column, list_parser, print_rows


def add_parsers(sub):
    p = sub.add_parser("profile", help="list the client's profiles (server and token), or choose the active one")
    cmds = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    list_parser(cmds, help="the profiles, their servers, and which is active (never their secrets)")
    cmds.add_parser("activate", help="make NAME the active profile").add_argument("name")


def add_token_set_parser(token_subparsers):
    """`ember token set`, under the `token` command's subparsers; it runs with run_token_set(args)."""
    p = token_subparsers.add_parser(
        "set", help="save a token (and the server it is for) in a profile of the config file",
        description=f"Save a token in a profile of {config.config_path()} (EMBER_CONFIG_PATH elsewhere) and make "
                    "that profile the active one.")
    p.add_argument("--token-id", required=True)
    p.add_argument("--token-secret", required=True)
    p.add_argument("--profile", default="default", help="the profile's name (default: default)")
    p.add_argument("--server", help="the control plane's URL, e.g. https://HOST:7070")
    p.add_argument("--ca-cert", metavar="FILE", help="the CA certificate (PEM) the server's certificate is checked "
                                                     "against (`ember server --tls auto` prints its path)")
    p.add_argument("--no-activate", action="store_true", help="save it without making it the active profile")


def run(args) -> int:
    if args.action == "list":
        return _list(args.json)
    return _activate(args.name)


def _list(as_json: bool) -> int:
    profiles = config.read_profiles()
    if not profiles and as_json:
        print("[]")
        return 0
    if not profiles:
        print(f"no profiles in {config.config_path()}; add one with `ember token set --token-id ID --token-secret S "
              "--server URL`")
        return 0
    active = config.active_profile_name(profiles)
    rows = [{"name": name, "active": name == active, "server_url": profile.get("server_url") or None}
            for name, profile in profiles.items()]
    print_rows(rows, [Column("active", "ACTIVE", lambda a: "*" if a else " "), Column("name", "NAME"),
                      Column("server_url", "SERVER", lambda url: url or "(no server_url)")], as_json)
    if os.environ.get("EMBER_PROFILE") and not as_json:
        print(f"(active through EMBER_PROFILE={active})", file=sys.stderr)
    return 0


def _activate(name: str) -> int:
    profiles = config.read_profiles()
    if name not in profiles:
        raise exception.NotFoundError(
            f"no profile named {name!r} in {config.config_path()} (profiles: {', '.join(profiles) or 'none'}); "
            f"add it with `ember token set --profile {name} --token-id ID --token-secret S`")
    _make_active(profiles, name)
    config.write_profiles(profiles)
    print(f"profile {name} is active")
    return 0


def _make_active(profiles: dict[str, dict], name: str):
    for n, profile in profiles.items():
        profile.pop("active", None)
        if n == name:
            profile["active"] = True


def run_token_set(args) -> int:
    if not config.PROFILE_NAME.fullmatch(args.profile):
        raise exception.InvalidError(f"a profile name is letters, digits, '-' and '_': {args.profile!r} is not one")
    profiles = config.read_profiles()
    profile = profiles.setdefault(args.profile, {})
    profile.update(token_id=args.token_id, token_secret=args.token_secret)
    if args.server:
        profile["server_url"] = args.server
    if args.ca_cert:
        ca = pathlib.Path(args.ca_cert).expanduser().resolve()
        if not ca.is_file():
            raise exception.InvalidError(f"--ca-cert {args.ca_cert}: no such file (the CA certificate, a PEM file: "
                                         "`ember server --tls auto` prints its path)")
        profile["ca_cert"] = str(ca)  # absolute: the profile is used from any directory
    if not args.no_activate:
        _make_active(profiles, args.profile)
    config.write_profiles(profiles)
    print(f"token {args.token_id} saved in profile {args.profile} of {config.config_path()}"
          + ("" if args.no_activate else f"; {args.profile} is the active profile"))
    return 0
