"""Blobs: large payloads, layer archives and volume files, named by the sha256 of their content.

The `BlobStore` interface, and `open_blob_store` to pick one. Content addressing makes a blob
immutable and a put idempotent: the same bytes get the same id wherever they come from. A blob
is there whole or not at all.

Implementations: a local directory (`local.py`, the embedded default). Every implementation
passes the one conformance suite, tests/test_blobs.py.
"""

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator


class BlobNotFound(KeyError):
    """There is no blob of that id (or the id is not a sha256 in hex, so there can be none)."""


class BlobStoreError(Exception):
    """The blob store cannot be opened as asked."""


def is_blob_id(blob_id: str) -> bool:
    """Whether blob_id could name a blob: 64 lowercase hex digits."""
    return len(blob_id) == 64 and all(c in "0123456789abcdef" for c in blob_id)


def open_blob_store(url_or_path: str | os.PathLike) -> "BlobStore":
    """The blob store at a path (a local directory, made if missing)."""
    target = os.fspath(url_or_path)
    scheme, sep, _ = target.partition("://")
    if not sep:
        # Imported here: each implementation may bring its own client.
        from .local import LocalBlobStore

        return LocalBlobStore(target)
    if scheme == "s3":
        raise BlobStoreError(f"cannot open {target}: S3-compatible storage comes later; for now give a "
                             "path to a directory")
    raise BlobStoreError(f"cannot open {target}: unknown blob store {scheme!r}; give a path to a directory")


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
        None if this store has none (then it goes through BlobGet)."""
