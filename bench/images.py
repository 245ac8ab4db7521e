"""Image benchmark: resolving built images, building a pip layer, and cold starts, in one run.

    python bench/images.py

Starts a control plane and a container-backend worker (Linux, root, debootstrap), and measures:
  - resolving an image that is already built (hash the steps, upload nothing new, ask the
    control plane): median of 20;
  - building a `pip_install(numpy)` layer (forced rebuild, warm package cache), next to
    `uv pip install` of the same package into a fresh virtual environment (warm cache too);
  - a cold start: `.remote()` of a function whose module imports numpy, with no warm container,
    to its result; next to the floor, `python -c "import numpy"` with compiled bytecode;
  - a first start of the image on the worker (no spare), right after the forced rebuilds (while
    the worker archives them), and on a quiet worker.
"""

import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
NUMPY = "numpy==2.3.5"
PY = "/usr/bin/python3"


def median_ms(xs) -> float:
    return statistics.median(xs) * 1000


def uv_baseline(tmp: pathlib.Path, runs: int, *flags: str) -> list[float]:
    """`uv venv` then `uv pip install numpy` into it, with a warm cache of its own."""
    import uv
    cache = tmp / "uv-cache"
    times = []
    for i in range(runs + 1):
        venv = tmp / f"venv{i}{''.join(flags)}"
        env = dict(os.environ, UV_CACHE_DIR=str(cache))
        t = time.perf_counter()
        subprocess.run([uv.find_uv_bin(), "venv", "-q", "--python", PY, str(venv)], check=True, env=env)
        subprocess.run([uv.find_uv_bin(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *flags,
                        NUMPY],
                       check=True, env=env)
        if i:  # the first run fills the cache
            times.append(time.perf_counter() - t)
    return times


def numpy_floor(venv: pathlib.Path, runs: int) -> list[float]:
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "2",
                    str(next((venv / "lib").glob("python3*/site-packages")))], check=True)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([str(venv / "bin" / "python"), "-c", "import numpy"], check=True)
        times.append(time.perf_counter() - t)
    return times


def main():
    from core import start_cluster, stop_cluster

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ember-bench-images-"))
    server, worker = start_cluster(tmp)
    try:
        import images_app

        import ember
        from ember._client.client import Client
        from ember.app import build_image

        client = Client.from_env()
        image = images_app.numpy_image
        client.run(build_image(client, image._resolve(client.upload_sync)))  # built once, cached from here on

        resolve = []
        for _ in range(20):
            t = time.perf_counter()
            client.run(build_image(client, image._resolve(client.upload_sync)))
            resolve.append(time.perf_counter() - t)

        layer, baseline = [], uv_baseline(tmp, 5)
        baseline_compiled = uv_baseline(tmp, 5, "--compile-bytecode")
        forced = ember.Image.debian_slim().pip_install(NUMPY, force_build=True)
        with open(os.devnull, "w") as devnull:
            for _ in range(5):
                resolved = forced._resolve(client.upload_sync)
                stderr, sys.stderr = sys.stderr, devnull
                try:
                    t = time.perf_counter()
                    client.run(build_image(client, resolved))
                    layer.append(time.perf_counter() - t)
                finally:
                    sys.stderr = stderr

        cold = []
        for _ in range(11):
            with images_app.app.run():
                t = time.perf_counter()
                images_app.numpy_sum.remote(10)
                cold.append(time.perf_counter() - t)
            # Each run ends with its containers stopped: the next one starts cold, a moment
            # later, as the next run after an edit would.
            time.sleep(1)
        first, cold = cold[0], cold[1:]
        # The same first start on a quiet worker: each after a forced rebuild (which discards
        # the spares) and a wait for the rebuilt layer's archive, which the start above shares
        # the machine with.
        quiet = []
        for _ in range(3):
            client.run(build_image(client, forced._resolve(client.upload_sync)))
            time.sleep(4)
            with images_app.app.run():
                t = time.perf_counter()
                images_app.numpy_sum.remote(10)
                quiet.append(time.perf_counter() - t)
            time.sleep(1)
        warm = []
        with images_app.app.run():
            images_app.numpy_sum.remote(10)
            for _ in range(200):
                t = time.perf_counter()
                images_app.numpy_sum.remote(10)
                warm.append(time.perf_counter() - t)
        floor = numpy_floor(tmp / "venv1", 10)
    finally:
        stop_cluster(server, worker)
        shutil.rmtree(tmp, ignore_errors=True)

    f = median_ms(floor)
    print(f"date: {time.strftime('%Y-%m-%d')}, machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.platform()}")
    print(f"resolve a built image (numpy + local source), median of 20: {median_ms(resolve):.1f} ms")
    print(f"pip_install({NUMPY}) layer, forced rebuild, median of 5: {median_ms(layer):.0f} ms; "
          f"uv venv + uv pip install into a fresh venv, median of 5: {median_ms(baseline):.0f} ms "
          f"({statistics.median(layer) / statistics.median(baseline):.2f}x); the same with --compile-bytecode "
          f"(as the layer has): {median_ms(baseline_compiled):.0f} ms "
          f"({statistics.median(layer) / statistics.median(baseline_compiled):.2f}x)")
    print(f"first cold start of the image on the worker (no spare yet), right after 5 forced rebuilds: "
          f"{first * 1000:.0f} ms; on a quiet worker, median of 3: {median_ms(quiet):.0f} ms "
          f"({' '.join(f'{q * 1000:.0f}' for q in quiet)})")
    print(f"cold start .remote() of a numpy function, runs 1 s apart, median of 10: {median_ms(cold):.0f} ms "
          f"(min {min(cold) * 1000:.0f}); floor `python -c 'import numpy'`: {f:.0f} ms; "
          f"goal 1.5x floor + 30 ms = {1.5 * f + 30:.0f} ms")
    print(f"warm .remote() round trip of the same function, median of 200: {median_ms(warm):.3f} ms")
    print("cold starts, ms:", " ".join(f"{c * 1000:.0f}" for c in cold))


if __name__ == "__main__":
    main()
