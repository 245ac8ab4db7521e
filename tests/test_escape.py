"""Escapes that must fail: from a function's container and from a build step, each attack on the
walls (the host's files by path and by handle, device nodes, mounts, cgroup limits, ptrace,
kernel modules, a user namespace to regain capabilities) is tried for real and must be refused,
while ordinary work still runs. And a container killed by SIGKILL is reported as such."""

import hashlib
import json
import os
import pathlib
import subprocess
import uuid

import pytest

import ember
from ember import exception
from ember._client.client import Client
from ember._layers import name_layers
from ember.proto import api_pb2
from ember.app import build_image
from ember.worker import cgroups as cg
from ember.worker import userns

import escape_app
from conftest import PY, ROOT

# CAP_DAC_READ_SEARCH, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_MKNOD, CAP_NET_RAW
FORBIDDEN_CAPS = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_MODULE": 16, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21,
                  "CAP_MKNOD": 27, "CAP_NET_RAW": 13}
DENIED = {"EPERM", "EACCES"}
# What each attack may meet instead of working. A read-only /sys has no cgroup files to write.
EXPECTED = {"write a cgroup limit": DENIED | {"EROFS", "ENOENT"}, "unshare -U -r": {"exit 1"}}


def user_namespace_expected(cluster) -> bool:
    """Whether this machine gives containers a user namespace (the worker would say so)."""
    ns = userns.UserNamespace.make([cluster.tmp])
    ns.close()
    return ns.why_not == ""


@pytest.fixture(scope="module")
def running(container_cluster):
    with escape_app.app.run():
        yield container_cluster


def host_paths(cluster) -> list[str]:
    """Files of the host a container must not read: the control plane's admin token and
    database, and a file the test makes."""
    marker = cluster.tmp / f"host-only-{uuid.uuid4().hex[:8]}"
    marker.write_text("host only")
    paths = [cluster.tmp / "server" / "admin-token.json", marker]
    paths += [p for p in (cluster.tmp / "server").glob("*.db")]
    assert all(p.exists() for p in paths)
    return [str(p) for p in paths]


def base_layer() -> pathlib.Path:
    layer_id = escape_app.base._resolve(lambda data: "").steps[0].layer_id
    return pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers" / layer_id


def check_refused(out: dict, paths: list[str], user_namespace: bool):
    # Each file of the host is simply not there: the container's root is its own.
    assert {out.pop(f"read {p}") for p in paths} == {"ENOENT"}
    assert out.pop("shadow sha256") == hashlib.sha256((base_layer() / "etc/shadow").read_bytes()).hexdigest()
    status = out.pop("status")
    # Container root is a host user of no privilege, or (where the kernel has no user
    # namespaces for it) host root held by the rest.
    uid_map = out.pop("uid_map")
    assert uid_map == (["0", str(userns.BASE), str(userns.COUNT)] if user_namespace else ["0", "0", "4294967295"])
    for name, result in out.items():
        assert result in EXPECTED.get(name, DENIED), f"{name}: {result}"
    for key in ("CapEff", "CapPrm", "CapBnd"):
        caps = int(status[key], 16)
        assert caps and not [n for n, bit in FORBIDDEN_CAPS.items() if caps >> bit & 1], (key, status[key])
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"  # 2: a filter


def test_a_function_cannot_reach_out_of_its_container(running):
    paths = host_paths(running)
    check_refused(escape_app.attack.remote(paths), paths, user_namespace_expected(running))


def test_an_ordinary_function_still_works(running):
    out = escape_app.ordinary.remote()
    assert out["note"] == "mine"
    # Files keep their owners through the user namespace: the image's and the runtime's are
    # root's, and a chown works.
    assert out["owners"] == {"/etc/shadow": 0, "/usr/local/share/note.txt": 1000, "/ember/lib": 0}
    assert out["sub"] == ["from", "a", "shell"]
    assert out["threads"] == [i * i for i in range(8)]


def test_a_sandbox_cannot_reach_out_of_its_container(running):
    """The same attacks, from a command run in a sandbox (sb.exec): its processes are forked by
    the container's init, and must be held by the same walls as a function's code."""
    paths = host_paths(running)
    sb = ember.Sandbox.create(app=escape_app.app, image=escape_app.base, timeout=120)
    try:
        with sb.open("/tmp/escape_app.py", "w") as f:  # the attack code itself, as the function runs it
            f.write(pathlib.Path(escape_app.__file__).read_text())
        p = sb.exec("python3", "-c", "import json, sys\nsys.path.insert(0, '/tmp')\nimport escape_app\n"
                    "print(json.dumps([escape_app.attempts(sys.argv[1:]), escape_app.ordinary_work()]))", *paths,
                    workdir="/tmp")
        output = p.stdout.read()
        assert p.wait() == 0, p.stderr.read()
    finally:
        sb.terminate()
    out, ordinary = json.loads(output)
    check_refused(out, paths, user_namespace_expected(running))
    assert ordinary["note"] == "mine" and ordinary["sub"] == ["from", "a", "shell"]
    assert ordinary["owners"] == {"/etc/shadow": 0, "/usr/local/share/note.txt": 1000, "/ember/lib": 0}


def test_a_forked_container_cannot_reach_out_either(running, tmp_path):
    """The same attacks, from a fork of a warm parent on the container backend (worker/forkns.py,
    tests/test_forkns.py): in namespaces the worker made for it, with the image's root."""
    from test_forkns import Parent
    paths = host_paths(running)
    cache = pathlib.Path(os.environ["EMBER_CACHE_DIR"])
    image = escape_app.base._resolve(lambda data: "")
    runtime = max((cache / "runtime").glob("py3.11-*"), key=lambda p: p.stat().st_mtime)  # the worker's, held by it
    parent = Parent(tmp_path)
    try:
        code = ("import json, sys\nsys.path.insert(0, '/ember/tests')\nimport escape_app\n"
                "open('/attempts.json', 'w').write(json.dumps(escape_app.attempts(sys.argv[1:])))")
        _, status = parent.fork("attacker", spec={
            "layers_dir": str(cache / "layers"), "lowers": [s.layer_id for s in reversed(image.steps)],
            "binds": [[str(runtime), "/ember/lib", True],
                      [str(ROOT / "tests" / "apps"), "/ember/tests", True]],
            "idmapped": [str(cache / "layers"), str(tmp_path)]},
            exec=["/usr/bin/python3", "-c", code, *paths],
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": "/ember/lib", "HOME": "/root"})
    finally:
        parent.close()
    assert status == 0, status
    out = json.loads((tmp_path / "attacker" / "upper" / "attempts.json").read_text())
    # Seen from inside, the fork's IDs map onto the worker's user namespace one to one; seen from
    # the host, onto the same unprivileged range as any container's.
    assert out["uid_map"] == ["0", "0", str(userns.COUNT)] and parent.host_uid_map == ["0", str(userns.BASE),
                                                                                      str(userns.COUNT)]
    out["uid_map"] = parent.host_uid_map
    check_refused(out, paths, user_namespace=True)


def build(image: ember.Image):
    client = Client.from_env()
    resolved = image._resolve(client.upload_sync)
    client.run(build_image(client, resolved))
    return resolved


def built_layer(resolved: api_pb2.Image, workspace: str = "main") -> pathlib.Path:
    """Where the worker keeps the image's last layer, as the control plane names it (_layers.py)."""
    named = api_pb2.Image()
    named.CopyFrom(resolved)
    name_layers(named, workspace)
    return pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers" / named.image_id


def test_a_build_step_cannot_reach_out_either(running):
    paths = host_paths(running)
    resolved = build(escape_app.base.run_function(escape_app.record_attempts, args=(paths,)))
    layer = built_layer(resolved)
    check_refused(json.loads((layer / "escape.json").read_text()), paths, user_namespace_expected(running))
    # What the step wrote is stored with its ordinary owners, whatever host IDs it ran as.
    assert (layer / "escape.json").stat().st_uid == 0
    assert (layer / "owned-by-1000").stat().st_uid == 1000


def test_a_build_step_runs_in_cgroups_of_its_own(running):
    token = uuid.uuid4().hex[:8]
    resolved = build(escape_app.base.run_commands(f"echo {token}; cat /proc/self/cgroup > /cgroups.txt"))
    layer = pathlib.Path(os.environ["EMBER_CACHE_DIR"]) / "layers" / resolved.steps[-1].layer_id
    lines = (layer / "cgroups.txt").read_text().splitlines()
    # "ID:CONTROLLERS:PATH": the pids controller's line (v1), or the unified hierarchy's "0::PATH".
    if cg.host_layout().version("pids") == 1:
        (line,) = [x for x in lines if "pids" in x.split(":")[1].split(",")]
    else:
        (line,) = [x for x in lines if x.startswith("0::")]
    assert line.split(":")[2].startswith("/ember/build-"), line


def test_a_workspace_cannot_put_its_files_under_another_images_layer_name(running):
    """Layers are a cache every workspace shares, by name. Workspace B builds an image whose
    step says it is the layer of A's image (its id, sent ahead of A's build) with other files;
    the control plane names layers from their steps, so B's files go under a name of their own,
    and A's image has A's files."""
    token = uuid.uuid4().hex[:8]
    mine = escape_app.base.run_commands(f"echo mine-{token} > /who")
    claimed = mine._resolve(lambda data: "").image_id
    forged = escape_app.base.run_commands(f"echo forged-{token} > /who")._resolve(lambda data: "")
    forged.steps[-1].layer_id = forged.image_id = claimed

    def cli(env, *args):
        return subprocess.run([PY, "-m", "ember.cli.main", *args], capture_output=True, text=True, check=True,
                              cwd=ROOT, env=dict(os.environ, **env), timeout=120).stdout

    cli(running.env, "workspace", "create", f"b{token}")
    t = json.loads(cli(running.env, "token", "new", "--workspace", f"b{token}", "--json"))
    b = dict(running.env, EMBER_TOKEN_ID=t["token_id"], EMBER_TOKEN_SECRET=t["token_secret"])
    subprocess.run([PY, "-c", "import sys\n"
                    "from ember._client.client import Client\nfrom ember.app import build_image\n"
                    "from ember.proto import api_pb2\n"
                    "client = Client.from_env()\n"
                    "client.run(build_image(client, api_pb2.Image.FromString(bytes.fromhex(sys.argv[1]))))\n",
                    forged.SerializeToString().hex()], check=True, cwd=ROOT, env=dict(os.environ, **b), timeout=300)
    build(mine)
    assert (built_layer(mine._resolve(lambda data: "")) / "who").read_text() == f"mine-{token}\n"
    assert (built_layer(forged, f"b{token}") / "who").read_text() == f"forged-{token}\n"
    # A run_function step's content cannot be checked against its name: its layer is named for
    # the workspace that asked, so the same claim from two workspaces makes two layers.
    step = api_pb2.ImageStep(kind=api_pb2.ImageStep.RUN_FUNCTION, args=["f"], layer_id=claimed, blob_id="")
    a_image, b_image = (api_pb2.Image(steps=[forged.steps[0], step]) for _ in range(2))
    name_layers(a_image, "main")
    name_layers(b_image, f"b{token}")
    assert a_image.image_id != b_image.image_id and a_image.steps[0].layer_id == b_image.steps[0].layer_id


@pytest.mark.parametrize("command", [
    "mount -t tmpfs none /mnt",
    "mount -t proc proc /mnt",
    "mknod /dev/sda-host b 8 0",
    "unshare -U -r sh -c 'mount -t tmpfs none /mnt'",
    "echo max > /sys/fs/cgroup/pids/pids.max",
])
def test_a_build_command_that_reaches_out_fails_the_build(running, command):
    token = uuid.uuid4().hex[:8]  # a new step each run: nothing cached
    with pytest.raises(exception.ImageBuildError, match="failed with exit code"):
        build(escape_app.base.run_commands(f"echo {token}", command))


def test_a_container_killed_by_sigkill_is_reported_so(running):
    with pytest.raises(exception.ContainerExitedError, match="killed by SIGKILL") as e:
        escape_app.kill_myself.remote(9)
    assert not isinstance(e.value, exception.OutOfMemoryError)
    assert "exited with code" not in str(e.value)

