"""Who may read which blob.

A blob's id is the sha256 of its content, so naming one proves nothing: ids show up in logs and
messages, and a workspace must not read another's large arguments, results, volume files or
layers by learning their ids. A workspace (its clients and its containers) may read a blob once
one of its callers put the blob's bytes: through BlobPut, or through an upload URL that only that
workspace's upload satisfies (`upload_tag`). The grant is kept in the store. Its functions' code
and packages (named in their definitions) are its own too. Workers and admins, who serve and
see every workspace, read any blob.

BlobExists answers a workspace's caller True only for a blob it may read: a caller that names
another's blob is told it is missing, and uploads the bytes itself (and so gets the grant), or
cannot. What workers fetch on a workspace's behalf (its functions' code and image files, its
volumes' files) it may name only if it may read it (`check_referable`): else a worker would
be the deputy that hands it another's bytes.
"""

import hashlib
import hmac
import os

from .apps import Apps
from .auth import ADMIN, WORKER, Principal
from .store import Store


class BlobNotGranted(LookupError):
    """A workspace named a blob it may not read."""


class BlobRights:
    def __init__(self, store: Store, apps: Apps):
        self.store = store
        self.apps = apps
        # Tags of upload URLs are checked by the process that handed them out (one that restarted
        # in between finds the tag wrong, and its uploader puts the blob through BlobPut instead).
        self._tag_key = os.urandom(32)

    def may_read(self, who: Principal, blob_id: str) -> bool:
        if who.role in (ADMIN, WORKER):
            return True
        return self.store.blob_granted(who.workspace, blob_id) or blob_id in self._definition_blobs(who.workspace)

    def check_referable(self, workspace: str, blob_ids, what: str):
        """Refuse (BlobNotGranted) a reference by the workspace to any blob it may not read."""
        own = None
        for blob_id in blob_ids:
            if not blob_id or self.store.blob_granted(workspace, blob_id):
                continue
            own = self._definition_blobs(workspace) if own is None else own
            if blob_id not in own:
                raise BlobNotGranted(f"{what} names blob {blob_id}, which this workspace has not put: upload its "
                                     "bytes first (BlobPut, or BlobUrl and BlobExists)")

    def granted(self, who: Principal, blob_id: str) -> bool:
        """Whether the caller's workspace was granted the blob (an admin or worker may read it anyway)."""
        return self.store.blob_granted(who.workspace, blob_id)

    async def grant(self, who: Principal, blob_id: str):
        """The caller put the blob's bytes: its workspace may read it, once this returns."""
        if who.workspace:
            self.store.grant_blob(who.workspace, blob_id)
            await self.store.durable()

    def upload_tag(self, who: Principal, blob_id: str) -> str:
        """What an upload URL handed to this caller makes the store keep with the blob: finding
        it there later proves the caller's workspace did the upload."""
        message = f"{who.workspace}\0{blob_id}".encode()
        return hmac.new(self._tag_key, message, hashlib.sha256).hexdigest()[:32]

    def _definition_blobs(self, workspace: str) -> set[str]:
        out = set()
        for fn in self.apps.functions():
            if fn.app.workspace == workspace:
                d = fn.definition
                out.update((d.code_blob_id, d.pickled.blob_id), (s.blob_id for s in d.image.steps))
        out.discard("")
        return out
