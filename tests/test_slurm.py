"""The Slurm provisioner: workers come from Slurm batch jobs when queued work has no room, and
go when idle. A real Slurm of one node (tests/slurm.py) runs them; the first test's worker runs
the container backend (where it can run), the others' the process backend (README: Provisioners)."""

import os
import re
import subprocess

import pytest

import slurm
from conftest import APPS, PY, Cluster, container_backend_missing, run_py, wait_for

why = slurm.missing()
pytestmark = pytest.mark.skipif(why is not None, reason=f"no Slurm here: {why}")


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory):
    with slurm.slurm_cluster(tmp_path_factory.mktemp("slurm")) as conf:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(conf)  # for the control planes the tests start, and squeue here
        yield conf
        if old is None:
            os.environ.pop("SLURM_CONF")
        else:
            os.environ["SLURM_CONF"] = old


@pytest.fixture
def provisioned(slurm_conf, tmp_path, monkeypatch):
    """Start a control plane with the Slurm provisioner and no worker: start(extra flags)."""
    clusters = []

    def start(*extra, backend="process"):
        c = Cluster(tmp_path)
        c.start_server(["--provisioner", "slurm", "--slurm-partition", "ember", "--max-workers", "1",
                        "--worker-cpu", "1", "--worker-memory", "512", "--worker-idle", "3s",
                        "--worker-backend", backend, "--worker-env", f"EMBER_CACHE_DIR={os.environ['EMBER_CACHE_DIR']}",
                        *extra])
        for key, value in c.env.items():
            monkeypatch.setenv(key, value)
        clusters.append(c)
        return c

    yield start
    for c in clusters:
        c.stop()
    # Whatever a test's control plane left running is not the next test's.
    os.system(f"SLURM_CONF={slurm_conf} scancel --me")
    wait_for(lambda: not slurm.jobs(slurm_conf), what="the tests' jobs to end")


def worker_list(c: Cluster) -> str:
    proc = run_py("import sys; from ember.cli.main import main; sys.exit(main(['worker', 'list']))")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def start_client(c: Cluster, code: str) -> subprocess.Popen:
    """A client that runs the app (its code, then a long sleep) until the test ends it."""
    out = open(c.logs / "client.log", "ab")
    script = f"import slurm_app, time\nwith slurm_app.app.run():\n{code}\n    time.sleep(120)"
    return subprocess.Popen([PY, "-c", script], env=dict(os.environ, PYTHONPATH=str(APPS)), stdout=out, stderr=out)


def test_queued_work_gets_a_slurm_worker_within_max_workers_which_ends_when_idle(provisioned, slurm_conf):
    # The container backend runs under slurmd as it does by hand (proctrack/linuxproc, no cgroup
    # plugin), from the tests' image cache (--worker-env EMBER_CACHE_DIR).
    backend = "process" if container_backend_missing() else "container"
    c = provisioned(backend=backend)
    assert slurm.jobs(slurm_conf) == []  # nothing is asked for without work
    client = start_client(c, "    print('ran', len(list(slurm_app.where.map([1.5] * 6))), flush=True)")
    try:
        # While it runs them, `ember worker list` names its job.
        wait_for(lambda: re.search(r"\t1 CPU\t512 MiB\t.*\tconnected, slurm job \d+\n", worker_list(c)), timeout=120,
                 what="the worker to be listed with its job")
        wait_for(lambda: "ran 6" in c.log("client"), timeout=240, what="the map to finish")  # a cold cache builds
    finally:
        client.terminate()
        client.wait(30)
    log = c.log()
    asked = re.findall(r"asked slurm for worker (\S+) \(1 CPU, 512 MiB\): job (\d+)", log)
    # Six inputs of 1.5 s wanted more containers than one worker of 1 CPU holds, but
    # --max-workers 1 allows one job: every input ran in it.
    assert len(asked) == 1, log
    name, job_id = asked[0]
    assert set(re.findall(r"starting container \S+ for where on worker (\S+)", log)) == {name}, log
    assert "(--max-workers) are asked for already" in log
    assert f"worker {name} connected from slurm job {job_id}" in log
    assert f"{backend} backend" in (c.tmp / "server" / "provisioner" / f"{name}-{job_id}.out").read_text()
    # Idle past --worker-idle (its container's scaledown window, then 3 s): it is told to exit,
    # and its job ends.
    wait_for(lambda: not slurm.jobs(slurm_conf), timeout=60, what="the idle worker's job to end")
    assert f"worker {name} (slurm job {job_id}) idle for 3s: told to exit" in c.log()
    wait_for(lambda: f"slurm job {job_id} of worker {name} ended" in c.log(), what="the provisioner to see it end")
    assert name not in worker_list(c)
    # Its token, made for it alone, was revoked with its job.
    proc = run_py("import sys; from ember.cli.main import main; sys.exit(main(['token', 'list']))")
    assert re.search(rf"\tworker\t-\tslurm worker {name}\t.*\trevoked", proc.stdout), proc.stdout


def test_a_job_that_cannot_start_is_reported_and_retried_while_others_run(provisioned, slurm_conf):
    c = provisioned()
    client = start_client(c, "    slurm_app.huge.spawn()\n"
                             "    print('ran in job', slurm_app.where.remote(0), flush=True)")
    try:
        # The huge function's worker (100000 MiB) is refused by sbatch, reported, and asked for
        # again after a backoff; the small one's went ahead meanwhile.
        refused = r"worker \S+ \(1 CPU, 100000 MiB\) failed to start: slurm refused it: (.*); a worker"
        wait_for(lambda: len(re.findall(refused, c.log())) >= 2, timeout=60,
                 what="the refused shape to be asked for again")
        assert "Memory specification can not be satisfied" in re.findall(refused, c.log())[0], c.log()
        wait_for(lambda: re.search(r"ran in job \d+", c.log("client")), timeout=60, what="the small function to run")
        listing = worker_list(c)
        assert re.search(r"ember-slurm-\w+\t1 CPU\t100000 MiB\t.*failed to start: slurm refused it: .*Memory",
                         listing), listing
    finally:
        client.terminate()
        client.wait(30)


def test_a_job_that_dies_before_its_worker_connects_is_reported_and_retried(provisioned, slurm_conf):
    c = provisioned("--worker-command", "/bin/false")  # each job runs, and ends at once
    client = start_client(c, "    slurm_app.where.spawn(0)")
    try:
        died = r"\(1 CPU, 512 MiB\) failed to start: its slurm job (\d+) ended before its worker connected"
        wait_for(lambda: len(re.findall(died, c.log())) >= 2, timeout=60, what="two jobs to die and be reported")
        first, second = re.findall(died, c.log())[:2]
        assert first != second  # the next job was tried
        assert "ended before its worker connected" in worker_list(c)
    finally:
        client.terminate()
        client.wait(30)


def test_a_job_that_stays_pending_past_the_start_timeout_is_cancelled_and_reported(provisioned, slurm_conf):
    # --begin: Slurm holds each job an hour, so no worker connects within --worker-start-timeout.
    c = provisioned("--slurm-arg=--begin=now+1hour", "--worker-start-timeout", "3s")
    client = start_client(c, "    slurm_app.where.spawn(0)")
    try:
        timed_out = r"failed to start: its slurm job (\d+) did not start a worker within 3s \(pending: BeginTime\)"
        wait_for(lambda: re.search(timed_out, c.log()), timeout=60, what="the pending job to time out")
        job_id = re.search(timed_out, c.log()).group(1)
        wait_for(lambda: job_id not in [j[0] for j in slurm.jobs(slurm_conf)], what="the job to be cancelled")
        wait_for(lambda: re.search(rf"asked slurm for worker \S+ \(1 CPU, 512 MiB\): job (?!{job_id}\b)\d+", c.log()),
                 what="the next job to be asked for")
        assert len(re.findall(rf"job {job_id} (did not start|ended before)", c.log())) == 1, c.log()  # reported once
    finally:
        client.terminate()
        client.wait(30)


def test_a_restarted_control_plane_follows_the_workers_it_provisioned(provisioned, slurm_conf):
    c = provisioned()
    client = start_client(c, "    print('ran in job', slurm_app.where.remote(0), flush=True)")
    try:
        wait_for(lambda: "ran in job" in c.log("client"), timeout=90, what="the first input to run")
    finally:
        client.terminate()
        client.wait(30)
    [(name, job_id)] = re.findall(r"asked slurm for worker (\S+) \(1 CPU, 512 MiB\): job (\d+)", c.log())
    c.kill_server()
    c.start_server(c.server.args[c.server.args.index("--provisioner"):])  # the same flags, the same data dir
    # Its worker reconnects; the new control plane knows its job by its label, and lets it go idle.
    wait_for(lambda: f"following slurm job {job_id} again (worker {name})" in c.log(), timeout=60,
             what="the restarted control plane to adopt the job")
    wait_for(lambda: not slurm.jobs(slurm_conf), timeout=60, what="the adopted worker's job to end when idle")
    assert f"worker {name} (slurm job {job_id}) idle for 3s: told to exit" in c.log()


def test_provisioner_flags_are_checked(tmp_path):
    for flags, says in ((["--provisioner", "slurm"], "needs --max-workers N"),
                        (["--provisioner", "kubernetes", "--max-workers", "2"], "needs --kubernetes-image"),
                        (["--provisioner", "slurm", "--max-workers", "2", "--worker-env", "X"], "pass KEY=VALUE")):
        proc = subprocess.run([PY, "-m", "ember.cli.main", "server", "--data-dir", str(tmp_path), *flags],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr


def test_a_gpu_function_asks_for_gres_of_its_type():
    from ember.proto import api_pb2
    from ember.server.provisioner.base import Shape, WorkerSpec
    from ember.server.provisioner.slurm import SlurmBackend
    shape = Shape.fitting(api_pb2.Resources(cpu=2.5, memory_mb=4096, gpu="H100:2"), Shape(1, 1024))
    assert shape == Shape(3, 4096, "H100", 2)
    spec = WorkerSpec("ember-slurm-1", shape, "127.0.0.1:7070", "tk-1", "secret", "container", ("ember",))
    args = SlurmBackend("gpu", ("--account=ml",)).sbatch_command(spec)
    assert {"--cpus-per-task=3", "--mem=4096M", "--gres=gpu:h100:2", "--partition=gpu", "--account=ml"} <= set(args)
    any_gpu = Shape.fitting(api_pb2.Resources(cpu=1, memory_mb=512, gpu="any"), Shape(1, 1024))
    assert "--gres=gpu:1" in SlurmBackend().sbatch_command(WorkerSpec(
        "ember-slurm-2", any_gpu, "127.0.0.1:7070", "tk-1", "secret", "container", ("ember",)))
