"""Metrics and health: /metrics scraped and parsed while inputs run, who may read it, /healthz,
/readyz, and the gRPC health service."""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from conftest import module_cluster, wait_for

import core_app


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with module_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def get(cluster, path, headers=None) -> tuple[int, str]:
    request = urllib.request.Request(cluster.web_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(cluster, headers=None) -> dict:
    """{(sample name, frozenset of labels): value}, as prometheus_client's parser reads /metrics."""
    status, text = get(cluster, "/metrics", headers)
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("ember_"), family.name
        for s in family.samples:
            samples[s.name, frozenset(s.labels.items())] = s.value
    return samples


def of(samples, name, **labels) -> float:
    """The sum of a sample's values over the series that have these labels (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_metrics_move_as_inputs_run(cluster, tmp_path):
    fn = {"workspace": "main", "app": "core-tests"}
    with core_app.app.run():
        assert list(core_app.square.map(range(7))) == [i * i for i in range(7)]
        with pytest.raises(Exception, match="it broke on purpose"):
            core_app.fail.remote()
        m = scrape(cluster)
        print("metrics after the map:", {k[0]: v for k, v in m.items() if "seconds" in k[0]})
        assert of(m, "ember_inputs_completed_total", function="square", **fn) == 7
        assert of(m, "ember_inputs_failed_total", function="square", **fn) == 0
        assert of(m, "ember_inputs_failed_total", function="fail", **fn) == 1
        assert of(m, "ember_inputs_completed_total", function="fail", **fn) == 0

        # One input held by a container, then done.
        marker, release = tmp_path / "m", tmp_path / "go"
        call = core_app.slow.spawn(str(marker), str(release), "done")
        wait_for(lambda: marker.exists(), what="the input to start")
        m = scrape(cluster)
        assert of(m, "ember_inputs_running", function="slow", **fn) == 1
        assert of(m, "ember_inputs_queued", function="slow", **fn) == 0
        release.touch()
        assert call.get(timeout=60) == "done"
        wait_for(lambda: of(scrape(cluster), "ember_inputs_completed_total", function="slow", **fn) == 1,
                 what="the slow input to count as completed")
        m = scrape(cluster)
        assert of(m, "ember_inputs_running", function="slow", **fn) == 0
        assert of(m, "ember_function_containers", function="square", **fn) >= 1
        assert of(m, "ember_containers", state="ready") >= 3  # square's, fail's, slow's
        assert of(m, "ember_workers", state="connected") == 1
        assert of(m, "ember_worker_free_cpu", worker="w1") > 0
        assert of(m, "ember_worker_free_memory_bytes", worker="w1") > 0
        assert of(m, "ember_cold_start_seconds_count") >= 3
        assert of(m, "ember_store_commit_seconds_count") > 0
        assert of(m, "ember_dispatch_latency_seconds_count") >= 9  # the map's 7, fail's and slow's
        assert of(m, "ember_dispatch_latency_seconds_sum") > 0
        assert of(m, "ember_gateway_requests_total", status="200") >= 3  # the scrapes before this one


def test_metrics_access(cluster):
    admin = json.loads(cluster.token_file.read_text())
    bearer = {"Authorization": f"Bearer {admin['token_id']}:{admin['token_secret']}"}
    assert of(scrape(cluster, bearer), "ember_workers", state="connected") == 1

    # A header is checked wherever the request comes from, loopback too (as a remote scraper's would be).
    status, text = get(cluster, "/metrics", {"Authorization": f"Bearer {admin['token_id']}:wrong"})
    assert status == 401 and "is not valid" in text, text
    status, text = get(cluster, "/metrics", {"Authorization": "Basic dXNlcjpwYXNz"})
    assert status == 401 and "Bearer TOKEN_ID:TOKEN_SECRET" in text, text

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "ember.cli.main", *args], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout
    cli("workspace", "create", "metrics-other")
    token = json.loads(cli("token", "new", "--workspace", "metrics-other", "--json"))
    status, text = get(cluster, "/metrics", {"Authorization": f"Bearer {token['token_id']}:{token['token_secret']}"})
    assert status == 403 and "only an admin token" in text, text
    m = scrape(cluster)
    assert of(m, "ember_gateway_requests_total", status="401") >= 2
    assert of(m, "ember_gateway_requests_total", status="403") >= 1


def test_health(cluster):
    assert get(cluster, "/healthz") == (200, "ok\n")
    assert get(cluster, "/readyz") == (200, "ready\n")
    with grpc.insecure_channel(cluster.url) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
