"""Kubernetes: no cluster can run here. The manifests in deploy/kubernetes/ and the Pods and
Secrets the provisioner makes are checked against Kubernetes' own schemas (kubernetes-validate,
strict: no unknown field); the backend's calls run against a stand-in for the API server that
keeps objects in memory. The decisions behind them are those test_slurm.py runs for real."""

import argparse
import pathlib
import re
import types

import pytest

from ember.cli.main import _parser
from ember.server.provisioner.base import Shape, WorkerSpec
from ember.server.provisioner.kubernetes import KubernetesBackend

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
K8S_VERSION = "1.33.0"  # the oldest release the manifests are meant for


def documents():
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def validate(doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def spec(url="https://ember-server.ember.svc:7070", shape: Shape | None = None) -> WorkerSpec:
    return WorkerSpec("ember-kubernetes-0a1b2c3d", shape or Shape(4, 8192), url, "tk-1", "s3cret", "container",
                      ("ember",), (("HTTPS_PROXY", "http://proxy:3128"),))


def test_the_manifests_are_valid_kubernetes_objects():
    kinds = [(name, doc["kind"]) for name, doc in documents()]
    for _, doc in documents():
        validate(doc)
    assert ("control-plane.yaml", "Deployment") in kinds and ("control-plane.yaml", "Service") in kinds
    assert ("workers-daemonset.yaml", "DaemonSet") in kinds


def test_the_manifests_pass_flags_that_ember_takes():
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for _, doc in documents():
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        command, *flags = container["args"]
        known = {opt for action in sub.choices[command]._actions for opt in action.option_strings}
        for flag in flags:
            name = flag.partition("=")[0]
            assert name in known, f"{doc['metadata']['name']}: `ember {command}` has no {name}"


def test_the_daemonset_has_what_the_container_backend_needs():
    ds = next(doc for name, doc in documents() if doc["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["privileged"] is True
    assert pod["hostPID"] is False and pod["hostNetwork"] is False


def test_a_provisioned_worker_is_a_valid_pod_running_ember_worker_with_its_token_in_a_secret():
    backend = KubernetesBackend("ember", "registry.example/ember:1")
    pod, secret = backend.pod(spec()), backend.secret(spec())
    validate(pod)
    validate(secret)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example/ember:1" and container["command"] == ["ember"]
    args = _parser().parse_args(container["args"])
    assert (args.command, args.name, args.cpu, args.memory, args.backend) == (
        "worker", "ember-kubernetes-0a1b2c3d", 4.0, 8192, "container")
    assert args.label == ["ember-job=kubernetes:ember-kubernetes-0a1b2c3d"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8192Mi"}
    # The token is in the Secret, referred to, never in the Pod itself.
    assert secret["stringData"]["EMBER_WORKER_TOKEN_SECRET"] == "s3cret"
    assert "s3cret" not in repr(pod)
    env = {e["name"]: e for e in container["env"]}
    assert env["EMBER_WORKER_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert env["EMBER_CA_CERT"]["value"] == "/etc/ember/tls/ca.crt"  # https: it trusts ember-tls's CA
    assert container["securityContext"] == {"privileged": True} and pod["spec"]["hostPID"] is False


def test_a_gpu_worker_asks_for_gpus_of_its_kind():
    pod = KubernetesBackend("ember", "ember:1").pod(spec("ember-server:7070", Shape(8, 65536, "H100", 2)))
    validate(pod)
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert not any(v["name"] == "ca" for v in pod["spec"]["volumes"])  # plaintext URL: no CA


class ApiServer:
    """A stand-in for the Kubernetes API server's CoreV1Api: objects kept in memory, phases set
    by the test, and its 404 for what does not exist."""

    class NotFound(Exception):
        status, reason = 404, "Not Found"

    def __init__(self):
        self.pods, self.secrets = {}, {}

    def create_namespaced_secret(self, namespace, body):
        self.secrets[body["metadata"]["name"]] = body

    def create_namespaced_pod(self, namespace, body):
        self.pods[body["metadata"]["name"]] = types.SimpleNamespace(
            metadata=types.SimpleNamespace(name=body["metadata"]["name"]),
            status=types.SimpleNamespace(phase="Pending", container_statuses=None, conditions=[
                types.SimpleNamespace(type="PodScheduled", status="False", reason="Unschedulable")]))

    def list_namespaced_pod(self, namespace, label_selector):
        assert label_selector == "ember.dev/role=provisioned-worker"
        return types.SimpleNamespace(items=list(self.pods.values()))

    def delete_namespaced_pod(self, name, namespace):
        if self.pods.pop(name, None) is None:
            raise self.NotFound()

    def delete_namespaced_secret(self, name, namespace):
        if self.secrets.pop(name, None) is None:
            raise self.NotFound()


def test_pods_are_submitted_followed_and_cleaned_up():
    api = ApiServer()
    backend = KubernetesBackend("ember", "ember:1", api=api)
    job = backend.submit(spec())
    assert set(api.pods) == set(api.secrets) == {job}
    assert backend.jobs([job]) == {job: ("pending", "Unschedulable")}
    api.pods[job].status.phase = "Running"
    assert backend.jobs([job]) == {job: ("running", "")}
    # A Pod that ended is gone for the provisioner, and deleted with its Secret.
    api.pods[job].status.phase = "Failed"
    assert backend.jobs([job]) == {}
    assert not api.pods and not api.secrets
    # Cancelling what is gone already is no error.
    backend.cancel(job)
    job2 = backend.submit(spec())
    backend.cancel(job2)
    assert not api.pods and not api.secrets


def test_a_refused_pod_leaves_no_secret_behind():
    from ember.server.provisioner import ProvisionError

    class Refusing(ApiServer):
        class Forbidden(Exception):
            status, reason = 403, "Forbidden"

        def create_namespaced_pod(self, namespace, body):
            raise self.Forbidden()

    api = Refusing()
    with pytest.raises(ProvisionError, match=re.escape("create_namespaced_pod: 403 Forbidden")):
        KubernetesBackend("ember", "ember:1", api=api).submit(spec())
    assert not api.secrets
