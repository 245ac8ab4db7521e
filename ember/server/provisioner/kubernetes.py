"""Workers as Kubernetes Pods: one Pod per worker, running `ember worker` in --kubernetes-image,
with its worker token in a Secret of its own; cancelling deletes both. The Python client
(`pip install 'ember[kubernetes]'`) talks to the API server as the control plane's service
account when it runs in the cluster, else as the kubeconfig says.

With an https control plane, a Pod trusts the ca.crt of Secret ember-tls (as the DaemonSet
does). A Pod is privileged because the container backend makes what a worker's containers need
(namespaces, cgroups, overlay mounts, loop devices for their disks, nftables); it shares
neither the node's PIDs nor its network. deploy/kubernetes/ has the control plane's manifests
(its service account may manage Pods and Secrets in its namespace) and a DaemonSet of static
workers, with the same worker container.
"""

from .base import JOB_LABEL, PENDING, RUNNING, ProvisionError, WorkerSpec

APP_LABEL = "app.kubernetes.io/name"
ROLE_LABEL = "ember.dev/role"  # "provisioned-worker": the Pods (and Secrets) this backend made
ROLE = "provisioned-worker"
TLS_SECRET = "ember-tls"  # its ca.crt: the CA workers trust, when the control plane's URL is https
CA_DIR = "/etc/ember/tls"
DATA_DIR = "/var/lib/ember/worker"
CACHE_DIR = "/var/lib/ember/cache"  # on the node: its workers share image layers


class KubernetesBackend:
    kind = "kubernetes"

    def __init__(self, namespace: str, image: str, api=None):
        self.namespace = namespace
        self.image = image
        self._core = api  # a CoreV1Api; made on first use (the client is an optional extra)

    # ---- what is created

    def secret(self, spec: WorkerSpec) -> dict:
        return {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": spec.name, "namespace": self.namespace, "labels": self._labels()},
                "type": "Opaque", "stringData": _env(spec)}

    def pod(self, spec: WorkerSpec) -> dict:
        shape = spec.shape
        resources = {"cpu": str(shape.cpu), "memory": f"{shape.memory_mb}Mi"}
        if shape.gpus:
            resources["nvidia.com/gpu"] = str(shape.gpus)
        tls = _tls(spec)
        env_names = sorted(_env(spec))
        container = {
            "name": "worker", "image": self.image,
            "args": spec.worker_args(DATA_DIR, f"kubernetes:{spec.name}")[len(spec.command):],
            "command": list(spec.command),
            "env": [{"name": key, "valueFrom": {"secretKeyRef": {"name": spec.name, "key": key}}}
                    for key in env_names]
                   + ([] if "EMBER_CACHE_DIR" in env_names else [{"name": "EMBER_CACHE_DIR", "value": CACHE_DIR}])
                   + ([{"name": "EMBER_CA_CERT", "value": f"{CA_DIR}/ca.crt"}] if tls else []),
            "resources": {"requests": resources, "limits": resources},
            "securityContext": {"privileged": True},
            "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, {"name": "cache", "mountPath": CACHE_DIR}],
        }
        pod_spec = {
            "restartPolicy": "Never", "hostPID": False, "hostNetwork": False, "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 30, "containers": [container],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "cache", "hostPath": {"path": CACHE_DIR, "type": "DirectoryOrCreate"}}],
        }
        if tls:
            container["volumeMounts"].append({"name": "ca", "mountPath": CA_DIR, "readOnly": True})
            pod_spec["volumes"].append({"name": "ca", "secret": {"secretName": TLS_SECRET,
                                                                 "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
        if shape.gpus and shape.gpu != "any":
            # NVIDIA's GPU feature discovery labels each node with its GPUs' product name.
            pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": shape.gpu}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": spec.name, "namespace": self.namespace,
                             "labels": {**self._labels(), JOB_LABEL: spec.name}},
                "spec": pod_spec}

    def _labels(self) -> dict[str, str]:
        return {APP_LABEL: "ember-worker", ROLE_LABEL: ROLE}

    # ---- Backend

    def submit(self, spec: WorkerSpec) -> str:
        core = self._api()
        self._call(core.create_namespaced_secret, self.namespace, self.secret(spec))
        try:
            self._call(core.create_namespaced_pod, self.namespace, self.pod(spec))
        except ProvisionError:
            self._delete(spec.name)
            raise
        return spec.name

    def cancel(self, job_id: str):
        self._delete(job_id)

    def jobs(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """The Pods asked for that have not ended; a Pod that has (Succeeded, Failed) is deleted
        with its Secret as it is seen, so none is left behind."""
        pods = self._call(self._api().list_namespaced_pod, self.namespace,
                          label_selector=f"{ROLE_LABEL}={ROLE}").items
        found = {}
        for pod in pods:
            name, phase = pod.metadata.name, pod.status.phase if pod.status else "Pending"
            if phase in ("Succeeded", "Failed"):
                self._delete(name)
            elif name in job_ids:
                found[name] = (RUNNING, "") if phase == "Running" else (PENDING, _waiting_reason(pod))
        return found

    # ---- the API

    def _api(self):
        if self._core is None:
            try:
                from kubernetes import client, config
            except ImportError:
                raise ProvisionError("the kubernetes Python client is not installed: pip install "
                                     "'ember[kubernetes]' where the control plane runs") from None
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except Exception as e:
                    raise ProvisionError(f"no Kubernetes credentials: neither in a cluster (service account) nor in "
                                         f"a kubeconfig ({e})") from None
            self._core = client.CoreV1Api()
        return self._core

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # the client's ApiException, or the connection's errors
            reason = getattr(e, "reason", None)
            status = getattr(e, "status", None)
            raise ProvisionError(f"{fn.__name__}: {status} {reason}" if status else f"{fn.__name__}: {e}") from None

    def _delete(self, name: str):
        core = self._api()
        for fn in (core.delete_namespaced_pod, core.delete_namespaced_secret):
            try:
                fn(name, self.namespace)
            except Exception as e:
                if getattr(e, "status", None) != 404:  # one already gone is no error
                    raise ProvisionError(f"{fn.__name__} {name}: {getattr(e, 'reason', e)}") from None


def _tls(spec: WorkerSpec) -> bool:
    return spec.server_url.startswith("https://")


def _env(spec: WorkerSpec) -> dict[str, str]:
    """What the worker's Secret holds: its token and --worker-env's, not a CA path of the
    control plane's disk (an https worker trusts ember-tls's ca.crt)."""
    env = spec.env()
    if _tls(spec):
        env.pop("EMBER_CA_CERT", None)
    return env


def _waiting_reason(pod) -> str:
    """Why a pending Pod waits: its container's (ErrImagePull, ...) or its scheduling's."""
    for status in (pod.status.container_statuses or []) if pod.status else []:
        if status.state and status.state.waiting and status.state.waiting.reason:
            return status.state.waiting.reason
    for cond in (pod.status.conditions or []) if pod.status else []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return cond.reason or "Unschedulable"
    return ""
