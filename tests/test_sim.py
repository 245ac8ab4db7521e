"""The simulated workers of bench/cluster.py serve a real control plane as real workers do.

bench/simworkers.py speaks the worker and container protocols with a trivial runtime (ident(x)
-> x); if the protocol changes under it, the scale benchmark would measure nothing: this says so.
"""

import json
import os
import subprocess
import sys

from conftest import ROOT, Cluster, wait_for

BENCH = ROOT / "bench"


def test_simulated_workers_serve_a_map(tmp_path):
    c = Cluster(tmp_path)
    c.start_server()
    stats = tmp_path / "sim.json"
    sim = subprocess.Popen([sys.executable, str(BENCH / "simworkers.py"), "--server", c.url, "--token-file",
                            str(c.worker_token_file), "--workers", "3", "--prefix", "sim", "--cpu", "2",
                            "--stats", str(stats)], stdout=open(c.logs / "sim.log", "ab"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: stats.exists() and json.loads(stats.read_text())["registered"] == 3,
                 what="3 simulated workers to register")
        code = (
            "from cluster_app import app, ident\n"
            "with app.run():\n"
            "    ident.update_autoscaler(min_containers=6)\n"
            "    assert list(ident.map(range(300))) == list(range(300))\n"
            "    assert ident.remote(7) == 7\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env=dict(os.environ, **c.env, PYTHONPATH=str(BENCH)))
        assert done.returncode == 0, done.stderr + c.log()
        wait_for(lambda: json.loads(stats.read_text())["outputs"] >= 301, what="the simulation's stats")
        seen = json.loads(stats.read_text())
        # Six containers of one CPU on three workers of two CPUs: placement filled every one.
        assert seen["connected"] == 6, seen
        assert not seen["errors"], seen["errors"]
        listed = subprocess.run([sys.executable, "-m", "ember.cli.main", "worker", "list"], capture_output=True,
                                text=True, env=dict(os.environ, **c.env), timeout=30)
        assert all(f"sim-{i}" in listed.stdout for i in range(3)), listed.stdout + listed.stderr
    finally:
        sim.terminate()
        sim.wait(15)
        c.stop()
