"""A Slurm cluster of one node (this machine) for the provisioner's tests: munged, slurmctld
and slurmd, as root, with a generated slurm.conf in a temp dir, on free ports. The node offers
less than the machine has (2 CPUs, 2000 MiB), so jobs fit whatever else runs here."""

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess

from conftest import free_port, wait_for

NODE_CPUS, NODE_MEMORY_MB = 2, 2000


def missing() -> str | None:
    """Why a Slurm cluster cannot start here (the tests skip), or None."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their user: the tests run it as root"
    return None


@contextlib.contextmanager
def slurm_cluster(tmp: pathlib.Path):
    """Yield the path of its slurm.conf (SLURM_CONF for sbatch, squeue, scancel); stop it all after."""
    for d in ("munge", "state", "spool", "log"):
        (tmp / d).mkdir(mode=0o700)
    (tmp / "munge" / "munge.key").write_bytes(os.urandom(1024))
    (tmp / "munge" / "munge.key").chmod(0o600)
    sock = tmp / "munge" / "socket"
    host = socket.gethostname().split(".")[0]  # slurmd knows itself by its short name
    conf = tmp / "slurm.conf"
    # A name of this run's own, which its jobs' processes carry (SLURM_CLUSTER_NAME): those left
    # when the cluster stops are found by it.
    name = f"embertest{os.getpid()}"
    conf.write_text(f"""ClusterName={name}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/log/slurmctld.log
SlurmdLogFile={tmp}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
MinJobAge=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName=ember Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs = []

    def start(name, *args):
        log = open(tmp / "log" / f"{name}.out", "ab")
        procs.append(subprocess.Popen([name, *args], stdout=log, stderr=log, env=env))

    try:
        start("munged", "-F", "--force", f"--key-file={tmp}/munge/munge.key", f"--socket={sock}",
              f"--pid-file={tmp}/munge/pid", f"--log-file={tmp}/munge/log", f"--seed-file={tmp}/munge/seed")
        wait_for(sock.exists, what="munged's socket")
        start("slurmctld", "-D", "-i")  # -i: no state from an earlier run
        start("slurmd", "-D")
        wait_for(lambda: _node_idle(env), timeout=60, what="the Slurm node to be idle")
        yield conf
    finally:
        # Jobs first, until they are gone (slurmd would leave their processes), then the daemons.
        subprocess.run(["scancel", "--me"], env=env, capture_output=True, timeout=30)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not jobs(conf) and not job_processes(name), timeout=60, what="the jobs to end")
        for pid in job_processes(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _node_idle(env) -> bool:
    out = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=env, capture_output=True, text=True)
    return out.stdout.strip() == "idle"


def jobs(conf: pathlib.Path) -> list[tuple[str, str, str]]:
    """(id, name, state) of the cluster's jobs that have not ended."""
    out = subprocess.run(["squeue", "--noheader", "--format=%i|%j|%T"], env=dict(os.environ, SLURM_CONF=str(conf)),
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def job_processes(cluster: str) -> list[int]:
    """The processes of the cluster's jobs that still run (zombies aside)."""
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"SLURM_CLUSTER_NAME={cluster}\0".encode() in (proc / "environ").read_bytes() \
                    and (proc / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                found.append(int(proc.name))
        except OSError:
            pass
    return found
