"""Workers as Slurm batch jobs: `sbatch` a script that runs `ember worker`, `scancel` it, and
`squeue` what is left of them. The commands are Slurm's own, found on PATH, configured as for
any user of the cluster (SLURM_CONF, munge)."""

import shlex
import subprocess

from .base import JOB_LABEL, PENDING, RUNNING, ProvisionError, WorkerSpec

# squeue's states of a job that may still start or run; the others (COMPLETING, CANCELLED,
# FAILED, TIMEOUT, NODE_FAIL, ...) mean its worker is gone or going.
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
           "STOPPED", "SIGNALING"}
COMMAND_TIMEOUT = 30.0


class SlurmBackend:
    kind = "slurm"

    def __init__(self, partition: str = "", sbatch_args: tuple[str, ...] = (), output_dir: str = ""):
        self.partition = partition
        self.sbatch_args = tuple(sbatch_args)  # --slurm-arg: account, QOS, time limit, ...
        self.output_dir = output_dir           # where the jobs' output files go ('': Slurm's default)

    def sbatch_command(self, spec: WorkerSpec) -> list[str]:
        shape = spec.shape
        args = ["sbatch", "--parsable", f"--job-name={spec.name}", "--nodes=1", "--ntasks=1",
                f"--cpus-per-task={shape.cpu}", f"--mem={shape.memory_mb}M",
                # Nothing of the control plane's environment (its keys and tokens) goes to the job.
                "--export=NIL"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if shape.gpus:
            kind = "" if shape.gpu == "any" else shape.gpu.lower() + ":"
            args.append(f"--gres=gpu:{kind}{shape.gpus}")
        if self.output_dir:
            args.append(f"--output={self.output_dir}/%x-%j.out")
        return args + list(self.sbatch_args)

    def script(self, spec: WorkerSpec) -> str:
        """The batch script: `ember worker` with its token in its environment (the script is
        passed on stdin, so the secret is on no command line), in a data dir of the job's own."""
        lines = ["#!/bin/sh", f"# An Ember worker for the control plane at {spec.server_url}: it exits when told to "
                 "(idle), or is cancelled.", "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(spec.env().items())]
        lines += ['dir="${TMPDIR:-/tmp}/ember-worker-$SLURM_JOB_ID"', "trap 'rm -rf \"$dir\"' EXIT"]
        # Two words the shell expands as the job runs: its data dir, and its label with the job id.
        args = [shlex.quote(a) for a in spec.worker_args(DATA_DIR, JOB)]
        label = shlex.quote(f"{JOB_LABEL}={JOB}")
        lines.append(" ".join(args).replace(shlex.quote(DATA_DIR), '"$dir"').replace(label, f'"{JOB_LABEL}={JOB}"'))
        return "\n".join(lines) + "\n"

    def submit(self, spec: WorkerSpec) -> str:
        out = _run(self.sbatch_command(spec), self.script(spec))
        return out.strip().split(";")[0]  # --parsable: "JOBID" or "JOBID;CLUSTER"

    def cancel(self, job_id: str):
        _run(["scancel", job_id])

    def jobs(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        wanted = set(job_ids)
        found = {}
        for line in _run(["squeue", "--me", "--noheader", "--format=%i|%T|%r"]).splitlines():
            job_id, state, reason = (line.strip().split("|") + ["", ""])[:3]
            if job_id in wanted and (state in WAITING or state == "RUNNING"):
                found[job_id] = (PENDING if state in WAITING else RUNNING, reason if state in WAITING else "")
        return found


DATA_DIR, JOB = "$dir", "slurm:$SLURM_JOB_ID"


def _run(args: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise ProvisionError(f"{args[0]} is not installed here (--provisioner slurm runs Slurm's commands: install "
                             "Slurm's client tools and its configuration on the control plane's machine)") from None
    except subprocess.TimeoutExpired:
        raise ProvisionError(f"{args[0]} did not answer within {COMMAND_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        raise ProvisionError((done.stderr or done.stdout).strip().replace("\n", "; ") or
                             f"{args[0]} exited with {done.returncode}")
    return done.stdout
