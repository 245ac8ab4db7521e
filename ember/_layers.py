"""Layer ids: how an image's layers are named, by the SDK and (with the last word) the control plane.

A layer is named by the sha256 of what makes it: the builder's version, its parent layer, its
step (kind, arguments, environment, path) and the digest of the local content it adds. Layers
are a cache that every workspace's images share, by these names; so the control plane names the
layers of each image it is given itself, from the steps, and never takes a client's names for
them (a false name would put one image's files under another's, for every workspace). Local
files are a tar whose blob id is its sha256, so their digest is known from the step; the
content of a `run_function` step is a pickle, which names nothing, so the client's digest of
its source is taken, but only for the client's own workspace: such a layer, and every layer
built on it, is named for the workspace too. So is a layer built with the workspace's secrets,
and a sandbox's snapshot (its archive's blob id is its digest), which is never built: the
control plane knows of it only from the snapshot it took itself (server/snapshots.py).
"""

import hashlib
import json

from .proto import api_pb2

BUILDER_VERSION = "1"  # a change of how steps are built, which must not reuse layers built before


def layer_id(parent: str, kind: str, args, env, path: str, digest: str) -> str:
    """kind: the step's kind in lower case ("pip_install"); env: a mapping or (name, value) pairs;
    digest: of its local content, or ""."""
    return hashlib.sha256(json.dumps([BUILDER_VERSION, parent, kind, list(args), sorted(dict(env).items()), path,
                                      digest]).encode()).hexdigest()


def snapshot_layer_id(parent: str, workspace: str, blob_id: str) -> str:
    """The layer of a sandbox's snapshot, on its image's last layer, whose archive is blob_id."""
    return layer_id(parent, "snapshot", (), {}, "", f"{workspace}/snapshot/{blob_id}")


def name_layers(image: api_pb2.Image, workspace: str):
    """Name the image's layers (and so the image) from its steps, in place (the control plane's)."""
    parent = ""
    for step in image.steps:
        kind = api_pb2.ImageStep.Kind.Name(step.kind).lower()
        if step.kind == api_pb2.ImageStep.RUN_FUNCTION:
            digest = f"{workspace}/{step.layer_id}"  # the client's name, which holds its digest
        elif step.kind == api_pb2.ImageStep.SNAPSHOT:
            step.layer_id = parent = snapshot_layer_id(parent, workspace, step.blob_id)
            continue
        elif step.secret_ids:
            # Built with the workspace's secrets (a private index's token, say): its files may
            # hold what they gave, so it is the workspace's own. Which secrets does not name it
            # (Secret.from_dict makes a new one each run), as Modal's secrets do not.
            digest = f"{workspace}/secrets/{step.blob_id}"
        else:
            digest = step.blob_id
        step.layer_id = parent = layer_id(parent, kind, step.args, step.env, step.path, digest)
    image.image_id = parent
