"""Blobs: large payloads, layer archives and volume files, named by the sha256 of their content.

The `BlobStore` interface, and `open_blob_store` to pick one. Content addressing makes a blob
immutable and a put idempotent: the same bytes get the same id wherever they come from. A blob
is there whole or not at all.

Implementations: a local directory (`local.py`, the embedded default) and an S3-compatible
bucket (`s3.py`, s3://BUCKET/PREFIX), which hands out presigned URLs. Every implementation
passes the one conformance suite, tests/test_blobs.py.
"""

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field


class BlobNotFound(KeyError):
    """There is no blob of that id (or the id is not a sha256 in hex, so there can be none)."""


class BlobStoreError(Exception):
    """The blob store cannot be opened as asked."""


def is_blob_id(blob_id: str) -> bool:
    """Whether blob_id could name a blob: 64 lowercase hex digits."""
    return len(blob_id) == 64 and all(c in "0123456789abcdef" for c in blob_id)


@dataclass(frozen=True)
class PutUrl:
    """Where to upload a blob's content directly: an HTTP PUT of exactly its bytes, with these headers."""
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def open_blob_store(url_or_path: str | os.PathLike) -> "BlobStore":
    """The blob store at a path (a local directory, made if missing) or s3://BUCKET/PREFIX."""
    target = os.fspath(url_or_path)
    scheme, sep, _ = target.partition("://")
    if not sep:
        # Imported here: each implementation may bring its own client.
        from .local import LocalBlobStore

        return LocalBlobStore(target)
    if scheme == "s3":
        bucket, _, prefix = target[len("s3://"):].partition("/")
        if not bucket:
            raise BlobStoreError(f"cannot open {target}: name the bucket, as in s3://BUCKET or s3://BUCKET/PREFIX")
        from .s3 import S3BlobStore

        return S3BlobStore(bucket, prefix)
    raise BlobStoreError(f"cannot open {target}: unknown blob store {scheme!r}; give a path to a directory or "
                         "s3://BUCKET/PREFIX")


class BlobStore(ABC):
    @abstractmethod
    async def put(self, chunks: AsyncIterable[bytes]) -> str:
        """Store the concatenated chunks and return their blob id. If the chunks end in an
        exception (or the put is cancelled), nothing is stored and the exception goes on."""

    @abstractmethod
    def get(self, blob_id: str) -> AsyncIterator[bytes]:
        """The blob's content, in chunks; iterating raises BlobNotFound for an unknown or malformed id."""

    @abstractmethod
    async def exists(self, blob_id: str) -> bool:
        """Whether the blob is stored (False for a malformed id)."""

    @abstractmethod
    async def delete(self, blob_id: str):
        """Forget the blob; nothing happens if there is none (a malformed id names none)."""

    @abstractmethod
    async def refresh(self, blob_id: str) -> bool:
        """Whether the blob is stored; if it is, it counts as put now (see `delete_unless_put_since`)."""

    @abstractmethod
    def list(self) -> AsyncIterator[tuple[str, int, float]]:
        """Every blob: (blob_id, size in bytes, unix time it was last put or refreshed)."""

    @abstractmethod
    async def delete_unless_put_since(self, blob_id: str, since: float) -> int:
        """Delete the blob unless it was put or refreshed at `since` or later; the bytes freed (0:
        kept, or none). Atomic with respect to put and refresh, so a blob someone just put (and
        is about to refer to) is never deleted: the blob collector's guarantee."""

    @abstractmethod
    def url_for(self, blob_id: str) -> str | None:
        """A URL from which a client may fetch the blob directly, bypassing the control plane;
        None if this store has none (then it goes through BlobGet). Whoever asks for one must
        have been found entitled to the blob first."""

    @abstractmethod
    async def put_url(self, blob_id: str, tag: str) -> PutUrl | None:
        """Where a client may upload the content of blob_id directly, bypassing the control plane
        (the store refuses any content but blob_id's, and keeps `tag` with it); None if this store
        has none (then it goes through BlobPut). Handing one out counts as a put (see
        `delete_unless_put_since`)."""

    @abstractmethod
    async def upload_tag(self, blob_id: str) -> str | None:
        """The tag of the upload URL through which the blob's content last came, if it did."""
