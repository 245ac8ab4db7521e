"""The BlobStore conformance suite, for every implementation (the params of the `blobs` fixture)."""

import asyncio
import hashlib
import os

import pytest
from conftest import run_async

from ember.server.blobs import BlobNotFound, BlobStoreError, open_blob_store

STORES = {"local": lambda tmp: tmp / "blobs"}
MIB = 1 << 20


@pytest.fixture(params=sorted(STORES))
def blobs(request, tmp_path):
    return open_blob_store(STORES[request.param](tmp_path))


async def chunks_of(*parts: bytes):
    for part in parts:
        yield part


async def read(blobs, blob_id: str) -> bytes:
    return b"".join([chunk async for chunk in blobs.get(blob_id)])


@run_async
async def test_put_and_get_a_blob_of_many_chunks(blobs):
    parts = [os.urandom(MIB) for _ in range(3)] + [b"tail", b""]
    content = b"".join(parts)
    blob_id = await blobs.put(chunks_of(*parts))
    assert blob_id == hashlib.sha256(content).hexdigest()
    assert await read(blobs, blob_id) == content
    assert await blobs.exists(blob_id)
    assert await blobs.put(chunks_of(content)) == blob_id  # the same bytes, the same blob
    assert await read(blobs, blob_id) == content
    url = blobs.url_for(blob_id)  # for a direct download, where the store has one
    assert url is None or url.startswith(("http://", "https://"))


@run_async
async def test_an_empty_blob(blobs):
    blob_id = await blobs.put(chunks_of())
    assert blob_id == hashlib.sha256(b"").hexdigest() and await read(blobs, blob_id) == b""


@run_async
async def test_delete(blobs):
    kept, gone = await blobs.put(chunks_of(b"kept")), await blobs.put(chunks_of(b"gone"))
    await blobs.delete(gone)
    assert not await blobs.exists(gone) and await blobs.exists(kept)
    with pytest.raises(BlobNotFound):
        await read(blobs, gone)
    await blobs.delete(gone)  # nothing there: nothing happens
    await blobs.delete("../" + kept)
    assert await read(blobs, kept) == b"kept"


@pytest.mark.parametrize("blob_id", ["0" * 64, "", "xyz", "A" * 64, "../" + "0" * 61, "0" * 63 + "/"])
@run_async
async def test_unknown_and_malformed_ids_are_not_found(blobs, blob_id):
    await blobs.put(chunks_of(b"something"))
    assert not await blobs.exists(blob_id)
    with pytest.raises(BlobNotFound) as raised:
        await read(blobs, blob_id)
    assert isinstance(raised.value, KeyError)


@run_async
async def test_an_aborted_put_leaves_nothing(blobs, tmp_path):
    async def broken():
        yield b"half of "
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        await blobs.put(broken())
    assert not await blobs.exists(hashlib.sha256(b"half of ").hexdigest())

    started = asyncio.Event()

    async def stalled():
        yield b"the first chunk"
        started.set()
        await asyncio.Event().wait()

    put = asyncio.create_task(blobs.put(stalled()))
    await started.wait()
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert not await blobs.exists(hashlib.sha256(b"the first chunk").hexdigest())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # not even a temporary file


def test_blob_store_urls(tmp_path):
    open_blob_store(str(tmp_path / "made"))
    assert (tmp_path / "made").is_dir()
    with pytest.raises(BlobStoreError, match="S3-compatible storage comes later"):
        open_blob_store("s3://bucket/prefix")
