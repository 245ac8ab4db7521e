"""Modal's API as Modal programs use it: `import ember as modal`, with real processes where the
cluster is involved (one control plane and a container-backend worker for the module)."""

import asyncio
import io
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from conftest import ROOT

import ember
import ember as modal
from ember import exception, refused


def steps(image: ember.Image) -> list[tuple]:
    return [(s.kind, s.args, dict(s.env), s.path) for s in image._steps]


def local_files(image: ember.Image, index: int) -> list[tuple[str, str]]:
    return sorted((str(src), dest) for src, dest in image._steps[index].local())


# ---------------------------------------------------------------- names that cannot work here


def test_a_program_naming_refused_names_imports_and_each_refuses_at_use(tmp_path):
    program = tmp_path / "modal_program.py"
    program.write_text(textwrap.dedent("""
        import ember as modal

        app = modal.App("refusals")
        nfs_type = modal.NetworkFileSystem
        placement: "modal.SchedulerPlacement | None" = None

        @app.function()
        def f(x):
            return x

        @modal.web_endpoint(method="POST")
        def old_style(item: dict):
            return item
        print("imported", old_style._ember_web.kind == modal.fastapi_endpoint(method="POST")(lambda: 0)._ember_web.kind)
    """))
    proc = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported True"

    uses = {
        "NetworkFileSystem": lambda: modal.NetworkFileSystem.from_name("shared"),
        "CloudBucketMount": lambda: modal.CloudBucketMount("bucket", secret=None),
        "Proxy": lambda: modal.Proxy.from_name("ip"),
        "forward": lambda: modal.forward(8000),
        "Cluster": lambda: modal.Cluster.from_context(),
        "clustered": lambda: modal.clustered(size=2),
        "SchedulerPlacement": lambda: modal.SchedulerPlacement(region="us-east"),
        "Environment": lambda: modal.Environment.from_name("dev"),
        "Workspace": lambda: modal.Workspace.from_context(),
        "Server": lambda: modal.Server.from_name("app", "srv"),
        "sessioned": lambda: modal.sessioned(),
        "Client": lambda: modal.Client.from_env(),
        "billing": lambda: modal.billing.workspace_billing_report(),
        "experimental": lambda: modal.experimental.stop_fetching_inputs(),
        "interact": lambda: modal.interact(),
        "SandboxSnapshot": lambda: modal.SandboxSnapshot.from_id("sn-1"),
    }
    assert set(uses) == {n for n in refused.REFUSED if "." not in n}  # every refused name is tried here
    for name, use in uses.items():
        with pytest.raises(exception.InvalidError) as e:
            use()
        assert "not supported by Ember" in str(e.value) and refused.REFUSED[name] in str(e.value), name
    with pytest.raises(exception.InvalidError, match="use ember.Volume"):
        modal.NetworkFileSystem.from_name("x")
    assert modal.Sandbox is ember.Sandbox and modal.ContainerProcess is ember.ContainerProcess  # issue 17
    assert modal.Tunnel is ember.Tunnel and "tcp_socket" in dir(modal.Tunnel)  # sb.tunnels()' values


def test_modal_exception_names_catch_what_ember_raises():
    for name in ["AlreadyExistsError", "AuthError", "ConflictError", "ConnectionError", "DataLossError",
                 "DeserializationError", "Error", "ExecutionError", "FunctionTimeoutError", "ImageBuildError",
                 "InputCancellation", "InternalError", "InternalFailure", "InvalidError", "NotFoundError",
                 "OutputExpiredError", "PermissionDeniedError", "RemoteError", "RequestSizeError",
                 "ResourceExhaustedError", "SerializationError", "ServiceError", "TimeoutError",
                 "UnimplementedError", "VersionError", "DeprecationError", "SandboxTimeoutError"]:
        assert isinstance(getattr(modal.exception, name), type), name
    assert modal.Error is exception.Error
    assert issubclass(exception.FunctionTimeoutError, exception.TimeoutError)
    assert issubclass(exception.FunctionTimeoutError, TimeoutError)  # the builtin still catches it
    assert issubclass(exception.AlreadyExistsError, exception.InvalidError)
    assert issubclass(exception.PermissionDeniedError, exception.AuthError)


def test_runtime_context_here_and_enable_output():
    assert modal.is_local() is True
    assert modal.current_input_id() is None and modal.current_function_call_id() is None
    with modal.enable_output():
        pass


# ---------------------------------------------------------------- images, as the steps they become


def test_a_dockerfile_becomes_the_steps_that_do_the_same(tmp_path, monkeypatch):
    (tmp_path / "app.py").write_text("print('app')\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.ini").write_text("a")
    (tmp_path / "conf" / "debug.log").write_text("ignored")
    (tmp_path / ".dockerignore").write_text("# logs\n**/*.log\n")
    (tmp_path / "Dockerfile").write_text(textwrap.dedent("""\
        # syntax=docker/dockerfile:1
        ARG BASE=debian:bookworm-slim
        FROM ${BASE} AS build
        ARG GREETING=hello
        ARG UNSET
        ENV APP_HOME=/app \\
            MODE="with space"
        ENV LEGACY old style
        WORKDIR $APP_HOME
        COPY app.py .
        COPY conf/ ./conf/
        ADD app.py /opt/app-copy.py
        RUN echo "$GREETING" > /greeting && \\
            echo ${MODE:-unset}
        RUN ["python3", "-c", "print('exec form')"]
        WORKDIR sub
        EXPOSE 8000
        LABEL org.example=1
        CMD ["python3", "app.py"]
        ENTRYPOINT []
    """))
    image = ember.Image.from_dockerfile(tmp_path / "Dockerfile", build_args={"GREETING": "hi"}, context_dir=tmp_path)
    assert steps(image) == [
        ("debian_slim", ("bookworm", "3.11"), {}, ""),
        ("env", (), {"APP_HOME": "/app", "MODE": "with space"}, ""),
        ("env", (), {"LEGACY": "old style"}, ""),
        ("workdir", (), {}, "/app"),
        ("add_local", ("COPY app.py /app",), {}, "/"),
        ("add_local", ("COPY conf/ /app/conf",), {}, "/"),
        ("add_local", ("ADD app.py /opt/app-copy.py",), {}, "/"),
        ("run_commands", ('echo "$GREETING" > /greeting &&  echo ${MODE:-unset}',), {"GREETING": "hi"}, ""),
        ("run_commands", (shlex.join(["python3", "-c", "print('exec form')"]),), {"GREETING": "hi"}, ""),
        ("workdir", (), {}, "/app/sub"),
        ("entrypoint", (), {}, ""),
    ]
    assert local_files(image, 4) == [(str(tmp_path / "app.py"), "app/app.py")]
    assert local_files(image, 5) == [(str(tmp_path / "conf" / "a.ini"), "app/conf/a.ini")]  # .dockerignore
    assert local_files(image, 6) == [(str(tmp_path / "app.py"), "opt/app-copy.py")]
    registry = ember.Image.from_dockerfile(tmp_path / "Dockerfile", build_args={"BASE": "python:3.11-slim"},
                                           context_dir=tmp_path)
    assert steps(registry)[0] == ("from_registry", ("python:3.11-slim",), {}, "")
    monkeypatch.chdir(tmp_path)  # without context_dir=, the context is the current directory (as Modal's)
    here = ember.Image.from_dockerfile("Dockerfile")
    assert local_files(here, 4) == [(str(tmp_path / "app.py"), "app/app.py")]
    # dockerfile_commands extends the image it is called on ("FROM base" is that image).
    extended = ember.Image.debian_slim().dockerfile_commands(["FROM base", "ENV A=1", "RUN echo $A"])
    assert steps(extended)[1:] == [("env", (), {"A": "1"}, ""), ("run_commands", ("echo $A",), {}, "")]


@pytest.mark.parametrize("line, message", [
    ("HEALTHCHECK CMD curl -f http://localhost/", "line 3: HEALTHCHECK: not supported by Ember's images"),
    ("SHELL [\"/bin/bash\", \"-c\"]", "line 3: SHELL: not supported"),
    ("USER app", "line 3: USER: not supported"),
    ("VOLUME /data", "use ember.Volume"),
    ("FROM debian:bookworm-slim", "line 3: FROM: a second FROM: multi-stage builds are not supported"),
    ("COPY --from=build /out /out", "line 3: COPY: --from=build: not supported"),
    ("ADD https://example.com/x.tgz /x", "URLs are not fetched"),
    ("ADD data.tar.gz /data", "ADD does not unpack archives"),
    ("ENTRYPOINT /start.sh", "the shell form would never run Ember's runtime"),
    ("RUN --mount=type=cache,target=/root/.cache pip install x", "RUN's flags"),
    ("FROBNICATE now", "line 3: FROBNICATE: not a Dockerfile instruction"),
])
def test_dockerfile_instructions_ember_lacks_name_the_file_and_line(tmp_path, line, message):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM python:3.11-slim\nRUN true\n{line}\n")
    with pytest.raises(exception.InvalidError) as e:
        ember.Image.from_dockerfile(dockerfile, context_dir=tmp_path)
    assert str(dockerfile) in str(e.value) and message in str(e.value)


def test_dockerfile_errors_for_missing_files_and_bases(tmp_path):
    with pytest.raises(exception.InvalidError, match="cannot read .*nope: No such file"):
        ember.Image.from_dockerfile(tmp_path / "nope")
    (tmp_path / "Dockerfile").write_text("RUN true\n")
    with pytest.raises(exception.InvalidError, match="line 1: RUN: the Dockerfile must start with FROM"):
        ember.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(exception.InvalidError, match="no Python"):
        ember.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path)
    # A missing COPY source is found when the image is resolved (the files are read then).
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY missing.txt /x\n")
    image = ember.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path)
    with pytest.raises(exception.InvalidError, match="line 2: COPY: missing.txt: no such file in the context"):
        image._resolve(lambda data: "")


def test_python_project_files_become_pip_installs(tmp_path):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""\
        [project]
        name = "demo"
        version = "0.1"
        dependencies = ["six==1.17.0", "attrs>=23"]
        [project.optional-dependencies]
        web = ["idna"]
        [tool.poetry]
        name = "demo"
    """))
    image = ember.Image.debian_slim().pip_install_from_pyproject(str(tmp_path / "pyproject.toml"), ["web"])
    assert steps(image)[1] == ("pip_install", ("six==1.17.0", "attrs>=23", "idna"), {}, "")
    with pytest.raises(exception.InvalidError, match="no optional-dependencies group 'gpu'"):
        ember.Image.debian_slim().pip_install_from_pyproject(str(tmp_path / "pyproject.toml"), ["gpu"])

    (tmp_path / "poetry.lock").write_text(textwrap.dedent("""\
        [[package]]
        name = "six"
        version = "1.17.0"
        groups = ["main"]
        markers = 'python_version >= "3.8"'
        [[package]]
        name = "pytest"
        version = "8.0.0"
        groups = ["dev"]
        [[package]]
        name = "idna"
        version = "3.7"
        category = "main"
    """))
    poetry = ember.Image.debian_slim().poetry_install_from_file(str(tmp_path / "pyproject.toml"))
    assert steps(poetry)[1][1] == ("idna==3.7", 'six==1.17.0; python_version >= "3.8"')
    with_dev = ember.Image.debian_slim().poetry_install_from_file(str(tmp_path / "pyproject.toml"), with_=["dev"])
    assert "pytest==8.0.0" in steps(with_dev)[1][1]
    with pytest.raises(exception.InvalidError, match="run `poetry lock`"):
        ember.Image.debian_slim().poetry_install_from_file(str(tmp_path / "pyproject.toml"), ignore_lockfile=True)

    # uv_sync without a uv.lock: the dependencies pyproject.toml lists (with extras).
    uv = ember.Image.debian_slim().uv_sync(str(tmp_path), extras=["web"])
    assert steps(uv)[1] == ("pip_install", ("six==1.17.0", "attrs>=23", "idna"), {}, "")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("six\n")
    both = ember.Image.debian_slim().uv_pip_install("attrs", requirements=[str(reqs), str(reqs)])
    assert steps(both)[1][1] == ("-r", "/.ember-files/requirements-0.txt", "-r", "/.ember-files/requirements-1.txt",
                                 "attrs")


def test_uv_sync_installs_what_uv_lock_pins(tmp_path):
    import uv
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "0.1"\n'
                                             'requires-python = ">=3.11"\ndependencies = ["six"]\n')
    lock = subprocess.run([uv.find_uv_bin(), "lock", "--project", str(tmp_path)], capture_output=True, text=True)
    if lock.returncode != 0:
        pytest.skip(f"uv lock cannot reach a package index here: {lock.stderr[-300:]}")
    image = ember.Image.debian_slim().uv_sync(str(tmp_path))
    assert steps(image)[1] == ("pip_install", ("-r", "/.ember-files/requirements.txt"), {}, "")
    ((exported, name),) = image._steps[1].local()
    assert name == "requirements.txt"
    lines = [line.strip() for line in pathlib.Path(exported).read_text().splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    assert len(pins) == 1 and pins[0].startswith("six==")


def test_from_registry_options_and_refusals_at_build_not_at_import(tmp_path):
    setup = ember.Image.from_registry("python:3.11-slim", setup_dockerfile_commands=["RUN pip --version", "ENV A=1"])
    assert steps(setup)[1:] == [("run_commands", ("pip --version",), {}, ""), ("env", (), {"A": "1"}, "")]
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    # Declared (as at a module's import), these are images; resolving one (to run or deploy it) says why not.
    for image, message in [
            (ember.Image.from_registry("nvidia/cuda:12.4.0-devel-ubuntu22.04", add_python="3.11"),
             "add_python='3.11' is not supported: Ember has no standalone Python builds"),
            (ember.Image.from_registry("team/private:1", secret=ember.Secret.from_dict({"REGISTRY_PASSWORD": "x"})),
             "secret= \\(registry credentials\\) is not supported"),
            (ember.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path, add_python="3.11"),
             "add_python= is not supported")]:
        with pytest.raises(exception.InvalidError, match=message):
            image.pip_install("six")._resolve(lambda data: "")


def test_build_step_options():
    run = ember.Image.debian_slim().run_commands("echo $TOKEN", env={"TOKEN": "t", "DROPPED": None})
    assert steps(run)[1] == ("run_commands", ("echo $TOKEN",), {"TOKEN": "t"}, "")
    secret = ember.Secret.from_dict({"A": "1"})
    assert ember.Image.debian_slim().pip_install("six", secrets=[secret])._steps[1].secrets == (secret,)
    in_dockerfile = ember.Image.debian_slim().dockerfile_commands(["RUN echo $A", "ENV B=2"], secrets=[secret])
    assert [s.secrets for s in in_dockerfile._steps] == [(), (secret,), ()]
    with pytest.raises(exception.InvalidError, match="without GPUs"):
        ember.Image.debian_slim().run_commands("nvidia-smi", gpu="A10G")
    assert steps(ember.Image.debian_slim().cmd(["python3"])) == steps(ember.Image.debian_slim())
    assert steps(ember.Image.debian_slim().entrypoint(["/usr/bin/tini", "--"]))[1] == (
        "entrypoint", ("/usr/bin/tini", "--"), {}, "")
    with pytest.raises(exception.InvalidError, match="list of non-empty strings"):
        ember.Image.debian_slim().entrypoint("/usr/bin/tini")
    with pytest.raises(exception.InvalidError, match="sh -c"):
        ember.Image.debian_slim().shell(["/bin/bash", "-c"])
    with pytest.raises(exception.InvalidError, match="builds have none"):
        ember.Image.debian_slim().micromamba()
    with pytest.raises(exception.InvalidError, match="builds have none"):
        ember.Image.debian_slim().micromamba_install("numpy")


def test_a_container_lacking_the_local_files_still_imports_the_declarations(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CONTAINER_ID", "ct-test")  # as inside a container: is_local() is False
    assert not modal.is_local()
    for image in (ember.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path),
                  ember.Image.debian_slim().uv_sync(str(tmp_path)),
                  ember.Image.debian_slim().pip_install_from_pyproject(str(tmp_path / "pyproject.toml"))):
        assert image._steps[-1].kind == "local_files_unavailable"


# ---------------------------------------------------------------- with the cluster


@pytest.fixture(scope="module")
def app_cluster(container_cluster):
    yield container_cluster


def test_current_input_and_call_ids_inside_a_container(app_cluster):
    app = ember.App("context")

    @app.function(serialized=True)
    def where(_=None):
        import ember
        return ember.is_local(), ember.current_input_id(), ember.current_function_call_id()

    @app.function(serialized=True)
    async def where_async():
        import asyncio

        import ember
        await asyncio.sleep(0)
        return ember.current_input_id(), ember.current_function_call_id()

    with app.run():
        local, input_id, call_id = where.remote()
        assert local is False and input_id and call_id and input_id != call_id
        call = where.spawn()
        _, spawned_input, spawned_call = call.get(timeout=120)
        assert spawned_call == call.object_id and spawned_input != input_id
        ids = list(where.map(range(3)))
        assert len({i for _, i, _ in ids}) == 3 and len({c for _, _, c in ids}) == 1  # one call, three inputs
        async_input, async_call = where_async.remote()
        assert async_input and async_call and async_input != async_call
    assert ember.current_input_id() is None


def test_object_managers_info_name_and_from_id(app_cluster):
    for cls in (ember.Dict, ember.Queue, ember.Volume):
        name = f"managed-{cls.__name__.lower()}-{uuid.uuid4().hex[:6]}"
        cls.objects.create(name)
        with pytest.raises(modal.exception.AlreadyExistsError, match="exists already"):
            cls.objects.create(name)
        cls.objects.create(name, allow_existing=True)
        listed = cls.objects.list()
        assert name in [o.name for o in listed] and all(isinstance(o, cls) for o in listed)
        obj = cls.from_name(name)
        info = obj.info()
        assert type(info).__name__ == f"{cls.__name__}Info" and info.name == name and info.created_at is not None
        same = cls.from_id(obj.object_id)
        assert same.name is None and same.info().name == name
        assert cls.objects.list(max_objects=1)[0].name == max(listed, key=lambda o: o.info().created_at).name
        assert name not in [o.name for o in cls.objects.list(created_before="2000-01-01")]
        cls.objects.delete(name)
        with pytest.raises(exception.NotFoundError):
            same.info()  # gone
        with pytest.raises(exception.NotFoundError):
            cls.objects.delete(name)
        cls.objects.delete(name, allow_missing=True)
        assert name not in [o.name for o in cls.objects.list()]
    assert ember.Queue.validate_partition_key("p1") == b"p1" and ember.Queue.validate_partition_key(None) == b""
    with pytest.raises(exception.InvalidError, match="at most 64"):
        ember.Queue.validate_partition_key("x" * 65)
    with pytest.raises(exception.InvalidError, match="a dict's id looks like"):
        ember.Dict.from_id("qu-123")
    with pytest.raises(exception.InvalidError, match="Ember has no environments"):
        ember.Dict.objects.list(environment_name="dev")
    with ember.Dict.ephemeral() as d:
        assert d.info().name is None


def test_secret_manager_and_info(app_cluster):
    name = f"managed-secret-{uuid.uuid4().hex[:6]}"
    ember.Secret.objects.create(name, {"KEY": "value"})
    with pytest.raises(exception.AlreadyExistsError):
        ember.Secret.objects.create(name, {"KEY": "other"})
    ember.Secret.objects.create(name, {"KEY": "other"}, allow_existing=True)  # left as it is
    assert name in [s.name for s in ember.Secret.objects.list()]
    info = ember.Secret.from_name(name).info()
    assert info.name == name and info.created_at is not None and info.environment_name == ""
    app = ember.App("secret-manager")

    @app.function(serialized=True, secrets=[ember.Secret.from_name(name)])
    def read():
        import os
        return os.environ["KEY"]

    with app.run():
        assert read.remote() == "value"
    ember.Secret.objects.delete(name)
    ember.Secret.objects.delete(name, allow_missing=True)
    with pytest.raises(exception.NotFoundError):
        ember.Secret.from_name(name).info()
    with pytest.raises(exception.InvalidError, match="a secret's id looks like"):
        ember.Secret.from_id("di-1")


def test_volume_files_from_outside_a_container(app_cluster, tmp_path):
    name = f"files-{uuid.uuid4().hex[:6]}"
    vol = ember.Volume.from_name(name, create_if_missing=True)
    (tmp_path / "b.txt").write_text("from a path")
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"from a file object"), "dir/a.txt")
        batch.put_file(tmp_path / "b.txt", "dir/b.txt")
        with open(tmp_path / "b.txt", "rb") as f:
            batch.put_file(f, "top.txt", mode=0o600)
    assert sorted(e.path for e in vol.iterdir("/")) == ["dir", "dir/a.txt", "dir/b.txt", "top.txt"]
    assert [e.path for e in vol.iterdir("/", recursive=False)] == ["dir", "top.txt"]
    buf = io.BytesIO()
    assert vol.read_file_into_fileobj("dir/a.txt", buf) == len(b"from a file object")
    assert buf.getvalue() == b"from a file object"

    vol.copy_files(["top.txt"], "dir")                # into an existing directory
    vol.copy_files(["dir/a.txt"], "renamed.txt")      # to a new name
    vol.copy_files(["dir"], "backup", recursive=True)  # a directory, as `cp -r dir backup`
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        vol.copy_files(["dir"], "elsewhere")
    with pytest.raises(FileNotFoundError):
        vol.copy_files(["nope.txt"], "x")
    files = {e.path for e in vol.listdir("/", recursive=True) if e.type == ember.types.FileEntryType.FILE}
    assert files == {"top.txt", "renamed.txt", "dir/a.txt", "dir/b.txt", "dir/top.txt", "backup/a.txt",
                     "backup/b.txt", "backup/top.txt"}
    assert b"".join(vol.read_file("backup/a.txt")) == b"from a file object"

    new_name = name + "-renamed"
    ember.Volume.rename(name, new_name)
    renamed = ember.Volume.from_name(new_name)
    assert renamed.info().name == new_name and b"".join(renamed.read_file("renamed.txt")) == b"from a file object"
    with pytest.raises(exception.NotFoundError):
        ember.Volume.from_name(name).hydrate()
    with pytest.raises(exception.AlreadyExistsError):
        ember.Volume.rename(new_name, new_name)
    asyncio.run(renamed.hydrate.aio())  # the async twins are there too
    ember.Volume.objects.delete(new_name)


def test_a_dockerfile_image_builds_and_runs(app_cluster, tmp_path):
    (tmp_path / "hello.py").write_text("GREETING = 'hello from COPY'\n")
    (tmp_path / "Dockerfile").write_text(textwrap.dedent(f"""\
        FROM debian:bookworm-slim
        ARG TOKEN={uuid.uuid4().hex[:8]}
        ENV MODE=dockerfile
        WORKDIR /srv/app
        COPY hello.py .
        RUN echo "$TOKEN $MODE" > /srv/built.txt
    """))
    image = ember.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path).run_commands(
        "echo $STEP_ONLY > /srv/step.txt", env={"STEP_ONLY": "step env"})
    app = ember.App("dockerfile")

    @app.function(image=image, serialized=True)
    def inspect():
        import os
        import sys
        sys.path.insert(0, "/srv/app")
        import hello
        return {"greeting": hello.GREETING, "cwd": os.getcwd(), "mode": os.environ.get("MODE"),
                "built": open("/srv/built.txt").read().split()[1], "step": open("/srv/step.txt").read().strip(),
                "step_env_in_container": os.environ.get("STEP_ONLY"), "token_in_container": os.environ.get("TOKEN")}

    with app.run():
        assert inspect.remote() == {"greeting": "hello from COPY", "cwd": "/srv/app", "mode": "dockerfile",
                                    "built": "dockerfile", "step": "step env", "step_env_in_container": None,
                                    "token_in_container": None}


def test_readme_checklist_gives_every_refusal_and_its_reason():
    readme = (ROOT / "README.md").read_text()
    for name, why in refused.REFUSED.items():
        assert f"- `{name}`: {why}" in readme, f"README's checklist lacks {name}: rerun bench/modal_names.py --markdown"


def test_file_pattern_matcher_as_dockerignore_has_it(tmp_path):
    m = modal.FilePatternMatcher("**/*.pyc", "!keep.pyc", "build/", "*.log")
    assert [p for p in ["a.pyc", "x/y/a.pyc", "keep.pyc", "build/out/x", "src/build/x", "a.log", "x/a.log", "a.py"]
            if m(pathlib.Path(p))] == ["a.pyc", "x/y/a.pyc", "build/out/x", "a.log"]
    assert m.patterns == ["**/*.pyc", "!keep.pyc", "build", "*.log"] and not m.can_prune_directories()
    only_py = ~modal.FilePatternMatcher("**/*.py")
    assert not only_py(pathlib.Path("pkg/mod.py")) and only_py(pathlib.Path("pkg/data.bin"))
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for name in ("pkg/mod.py", "pkg/data.bin", "pkg/sub/deep.py", "pkg/sub/deep.pyc"):
        (tmp_path / name).write_text("x")
    image = ember.Image.debian_slim().add_local_dir(tmp_path / "pkg", "/root/pkg", ignore=only_py)
    assert [dest for _, dest in image._steps[1].local()] == ["mod.py", "sub/deep.py"]  # not pruned at sub/
    (tmp_path / "ignorefile").write_text("# comment\n*.bin\n")
    assert modal.FilePatternMatcher.from_file(tmp_path / "ignorefile").patterns == ["*.bin"]
    with pytest.raises(exception.InvalidError, match="cannot read it"):
        modal.FilePatternMatcher.from_file(tmp_path / "missing")
    # A Dockerfile's context: .dockerignore with a "!" taking a file back.
    (tmp_path / ".dockerignore").write_text("pkg/sub\n!pkg/sub/deep.py\n")
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY pkg /app\n")
    copied = ember.Image.from_dockerfile(tmp_path / "Dockerfile", context_dir=tmp_path)
    assert sorted(dest for _, dest in copied._steps[1].local()) == ["app/data.bin", "app/mod.py", "app/sub/deep.py"]


def test_app_registries_and_tags():
    app = ember.App("registries", tags={"team": "ml"})

    @app.function()
    @ember.fastapi_endpoint()
    def web():
        return 1

    @app.function()
    def plain():
        return 1

    @app.cls()
    class Model:
        @ember.fastapi_endpoint()
        def predict(self):
            return 1

        @ember.method()
        def train(self):
            return 1

    @app.local_entrypoint()
    def main():
        pass

    assert app.registered_web_endpoints == ["web", "Model.predict"]
    assert list(app.registered_entrypoints) == ["main"] and app.description == "registries"
    app.set_tags({"stage": "dev"})
    assert app.get_tags() == {"team": "ml", "stage": "dev"}
    with pytest.raises(exception.InvalidError, match="pass a dict of strings"):
        app.set_tags({"n": 1})


# ---------------------------------------------------------------- handles: apps, functions, calls, images


def _until_logged(logs, text: str, tries: int = 100) -> list:
    """The tail of `logs` once a line containing text is in it (a line reaches the store a little
    after it is printed)."""
    for _ in range(tries):
        entries = list(logs.tail(200))
        if any(text in e.message for e in entries):
            return entries
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never reached the logs: {[e.message for e in entries]}")


def test_app_and_function_handles_read_logs_info_and_stop(app_cluster):
    import datetime
    import threading
    import urllib.request

    app = modal.App("handles")

    @app.function(serialized=True)
    def shout(word, delay=0.0):
        import sys
        import time
        time.sleep(delay)
        print(f"hello {word}")
        print(f"oops {word}", file=sys.stderr)
        return word

    @app.function(serialized=True)
    def quiet():
        print("quiet here")

    assert app.name == "handles"
    with pytest.raises(exception.InvalidError, match="not running here"):
        app.stop()
    with pytest.raises(exception.InvalidError, match="not running here"):
        app.logs.tail()
    with app.run():
        assert shout.remote("first") == "first" and shout.app is app
        quiet.remote()
        info = app.info()
        assert info.app_id == app.app_id and info.description == "handles" and not info.deployed
        assert info.functions == {"shout": shout.object_id, "quiet": quiet.object_id}
        url = app.get_dashboard_url()
        assert url == f"{app_cluster.dashboard_url}/dashboard/apps/{app.app_id}", url
        with urllib.request.urlopen(url, timeout=30) as page:  # the dashboard's (its login page, without a session)
            assert "/dashboard/" in page.url and page.status == 200

        entries = _until_logged(app.logs, "hello first")
        assert {"hello first\n", "oops first\n", "quiet here\n"} <= {e.message for e in entries}
        e = next(e for e in entries if e.message == "hello first\n")
        assert e.source == "stdout" and e.object_id == app.app_id and str(e) == "hello first\n"
        assert e.timestamp.tzinfo is not None and len(e.context_ids) == 3  # call, input, container
        of_shout = {e.message for e in _until_logged(shout.logs, "hello first")}
        assert "hello first\n" in of_shout and "quiet here\n" not in of_shout
        assert [e.message for e in shout.logs.tail(10, source="stderr")] == ["oops first\n"]
        since = datetime.datetime.now() - datetime.timedelta(minutes=5)
        assert "hello first\n" in {e.message for e in app.logs.fetch(since=since, source="stdout")}
        assert list(app.logs.fetch(since=since - datetime.timedelta(days=1),
                                   until=since - datetime.timedelta(hours=1))) == []

        call = shout.spawn("spawned")
        assert call.get(timeout=120) == "spawned"
        of_call = {e.message for e in _until_logged(call.logs, "hello spawned")}
        assert of_call == {"hello spawned\n", "oops spawned\n"}  # that call's lines only
        assert {e.message for e in modal.FunctionCall.from_id(call.object_id).logs.tail()} == of_call

        # stream: the lines printed from now on, as they come; it ends after `timeout` without one.
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(e.message for e in shout.logs.stream(timeout=3)))
        reader.start()
        streamed = shout.spawn("streamed", delay=1.0)  # printed once the stream is open
        reader.join(120)
        assert not reader.is_alive() and streamed.get(timeout=60) == "streamed"
        assert "hello streamed\n" in seen and "hello first\n" not in seen, seen

        app.stop()  # as `ember app stop` does: no more calls
        with pytest.raises(exception.Error):
            shout.remote("late")
    with pytest.raises(exception.InvalidError, match="pass 'stdout', 'stderr' or 'system'"):
        list(modal.FunctionCall.from_id(call.object_id).logs.tail(source="stdin"))
    for refused_use in (lambda: app.server(), lambda: app.stats(), lambda: shout.stats(), lambda: shout.metrics,
                        lambda: shout.autoscaler, lambda: call.get_call_graph()):
        with pytest.raises(exception.InvalidError, match="not supported by Ember"):
            refused_use()


def test_a_deployed_app_stops_from_its_lookup(app_cluster):
    app = modal.App(f"stoppable-{uuid.uuid4().hex[:6]}")

    @app.function(serialized=True)
    def one():
        return 1

    app.deploy()
    assert modal.Function.from_name(app.name, "one").remote() == 1
    looked_up = modal.App.lookup(app.name)
    assert looked_up.info().deployed and looked_up.info().version == 1
    looked_up.stop()
    with pytest.raises(exception.NotFoundError):
        modal.App.lookup(app.name)
    with pytest.raises(exception.NotFoundError):
        modal.Function.from_name(app.name, "one").remote()


def test_function_from_id_and_info(app_cluster):
    app = modal.App("by-id")

    @app.function(serialized=True, cpu=(0.25, 1), memory=200, timeout=33, retries=2, max_containers=3,
                  env={"A": "1"})
    @modal.concurrent(max_inputs=4, target_inputs=2)
    def double(x):
        return 2 * x

    @app.function(serialized=True)
    def count(n):
        yield from range(n)

    @app.function(serialized=True)
    @modal.batched(max_batch_size=8, wait_ms=10)
    def batch(xs):
        return xs

    with app.run():
        same = modal.Function.from_id(double.object_id)
        assert same.remote(21) == 42 and same.object_id == double.object_id and same.app is None
        assert list(modal.Function.from_id(count.object_id).remote_gen(3)) == [0, 1, 2]  # known as a generator
        info = same.info()
        assert (info.cpu, info.memory_mib, info.timeout, info.max_retries, info.max_containers) == (
            (0.25, 1.0), 200, 33.0, 2, 3)
        assert info.concurrency_info == modal.types.FunctionInfo.ConcurrencyInfo(4, 2) and info.batching_info is None
        assert info.gpus == [] and info.volumes == {} and info.web_url is None
        assert batch.info().batching_info == modal.types.FunctionInfo.BatchingInfo(8, 10)
        assert double.with_options(timeout=7).info().timeout == 7.0  # a handle with options: its own
        stale = double.object_id
    with pytest.raises(exception.NotFoundError, match="there is no function"):
        modal.Function.from_id(stale)  # its app stopped
    with pytest.raises(exception.InvalidError, match="a function's id looks like 'fu-'"):
        modal.Function.from_id("fc-123")


def test_secret_update_merges_into_the_named_secret(app_cluster):
    name = f"updated-{uuid.uuid4().hex[:6]}"
    modal.Secret.objects.create(name, {"KEEP": "1", "CHANGE": "old"})
    secret = modal.Secret.from_name(name)
    secret.update({"CHANGE": "new", "ADD": "3"})
    app = modal.App("secret-update")

    @app.function(serialized=True, secrets=[modal.Secret.from_name(name, required_keys=["ADD"])])
    def read():
        import os
        return {k: os.environ[k] for k in ("KEEP", "CHANGE", "ADD")}

    with app.run():
        assert read.remote() == {"KEEP": "1", "CHANGE": "new", "ADD": "3"}
    assert [s for s in modal.Secret.objects.list() if s.name == name]
    with pytest.raises(exception.InvalidError, match="pass a dict of strings"):
        secret.update({"N": 1})
    with pytest.raises(exception.InvalidError, match="only a named secret"):
        modal.Secret.from_dict({"A": "1"}).update({"A": "2"})
    modal.Secret.objects.delete(name)
    with pytest.raises(exception.NotFoundError, match="no secret named .* to update"):
        secret.update({"A": "1"})


def test_image_build_hydrate_and_pipe(app_cluster):
    def with_marker(image, value):
        return image.env({"MARKER": value})

    image = modal.Image.debian_slim().pipe(with_marker, "built-now")
    assert steps(image)[-1][0] == "env" and image.object_id is None
    with pytest.raises(exception.ExecutionError, match="is not built: build it with image.build"):
        image.hydrate()
    assert image.build() is image and image.object_id and image.hydrate() is image
    again = modal.Image.debian_slim().pipe(with_marker, "built-now").build()
    assert again.object_id == image.object_id  # the same recipe is the same image
    with pytest.raises(exception.InvalidError, match="must return an Image"):
        image.pipe(lambda i: None)


def test_refused_methods_raise_their_reason():
    image = modal.Image.debian_slim()
    uses = {
        "Image.from_aws_ecr": lambda: modal.Image.from_aws_ecr("1.dkr.ecr.amazonaws.com/x", secret=None),
        "Image.from_gcp_artifact_registry": lambda: modal.Image.from_gcp_artifact_registry("gcr.io/x"),
        "Image.pip_install_private_repos": lambda: image.pip_install_private_repos("github.com/a/b", git_user="u"),
        "Image.from_scratch": lambda: modal.Image.from_scratch(),
        "Image.from_id": lambda: modal.Image.from_id("im-1"),
        "Image.from_name": lambda: modal.Image.from_name("base"),
        "Image.publish": lambda: image.publish("base"),
        "Image.logs": lambda: image.logs,
    }
    for name, use in uses.items():
        with pytest.raises(exception.InvalidError) as e:
            use()
        assert refused.REFUSED[name] in str(e.value), name


def test_a_read_only_volume_mount_cannot_be_written_in_the_container(app_cluster):
    with ember.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"kept"), "data.txt")
        app = modal.App("read-only-volume")

        def attempt(path):
            import errno
            with open(f"{path}/data.txt") as f:
                before = f.read()
            try:
                with open(f"{path}/new.txt", "w") as f:
                    f.write("written")
                wrote = "wrote"
            except OSError as e:
                wrote = errno.errorcode[e.errno]
            return before, wrote

        reader = app.function(serialized=True, volumes={"/data": vol.read_only()}, name="reader")(
            lambda: attempt("/data"))
        with app.run():
            assert reader.remote() == ("kept", "EROFS")
            assert reader.info().volumes == {"/data": vol.object_id}
            # with_options(volumes=) replaces the mounts, read-only or not: the same volume, writable
            assert reader.with_options(volumes={"/data": vol.with_mount_options(read_only=False)}).remote() == (
                "kept", "wrote")
        assert vol.read_only()._read_only and not vol._read_only  # a new handle; this one's methods work
    with pytest.raises(exception.InvalidError, match="a volume is mounted whole"):
        vol.with_mount_options(sub_path="models")
    with pytest.raises(exception.InvalidError, match="pass True or False"):
        vol.with_mount_options(read_only="yes")
