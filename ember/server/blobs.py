"""Blob store on the control plane's disk: content-addressed files named by their sha256."""

import hashlib
import os
import pathlib
import tempfile


class BlobStore:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, blob_id: str) -> pathlib.Path:
        if len(blob_id) != 64 or not all(c in "0123456789abcdef" for c in blob_id):
            raise KeyError(blob_id)
        return self.root / blob_id[:2] / blob_id

    def exists(self, blob_id: str) -> bool:
        try:
            return self.path(blob_id).exists()
        except KeyError:
            return False

    def writer(self) -> "BlobWriter":
        return BlobWriter(self)


class BlobWriter:
    """Streams a blob to a temporary file, then renames it to its hash: never half a blob."""

    def __init__(self, store: BlobStore):
        self.store = store
        fd, self.tmp = tempfile.mkstemp(dir=store.root, prefix=".upload-")
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()

    def write(self, data: bytes):
        self.hash.update(data)
        self.file.write(data)

    def commit(self) -> str:
        self.file.close()
        blob_id = self.hash.hexdigest()
        dest = self.store.path(blob_id)
        dest.parent.mkdir(exist_ok=True)
        os.replace(self.tmp, dest)
        return blob_id

    def abort(self):
        self.file.close()
        os.unlink(self.tmp)
