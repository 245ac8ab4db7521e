"""This checkout against the code of another commit, in one run: a benchmark's rounds alternate
between the two, each in fresh processes, so that what else the machine does weighs on both
alike. REV's code comes from a temporary git worktree of it, put first on the path of the
benchmark's script (this checkout's) and of the cluster it starts.

A benchmark that uses it runs itself again with `--json`, and prints one line of JSON (its
figures) among its output.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def alternate(script: str, child_args: list[str], rev: str, rounds: int) -> dict[str, list[tuple[dict, str]]]:
    """Run `script --json *child_args` for REV then this checkout, `rounds` times: by label (REV,
    "this"), each run's figures and its whole output."""
    tree = pathlib.Path(tempfile.mkdtemp(prefix="ember-rev-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev], check=True)
    child = [sys.executable, script, "--json", *child_args]
    runs: dict[str, list[tuple[dict, str]]] = {rev: [], "this": []}
    try:
        for _ in range(rounds):
            for label, env, cwd in ((rev, dict(os.environ, PYTHONPATH=str(tree)), tree),
                                    ("this", dict(os.environ), ROOT)):
                out = subprocess.run(child, env=env, cwd=cwd, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"the benchmark of {label} failed:\n{out.stderr[-3000:]}")
                figures = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))
                runs[label].append((figures, out.stdout))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    return runs
