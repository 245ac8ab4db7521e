"""The BlobStore conformance suite, for every implementation (the params of the `blobs` fixture)."""

import asyncio
import hashlib
import os
import time

import pytest
from conftest import run_async
from services import http, seaweedfs

from ember.server.blobs import BlobNotFound, BlobStoreError, open_blob_store


def s3_store(tmp_path, monkeypatch):
    s3 = seaweedfs()
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return open_blob_store(s3.new_blob_url() + "/some/prefix")


STORES = {"local": lambda tmp, _: open_blob_store(tmp / "blobs"), "s3": s3_store}
MIB = 1 << 20


@pytest.fixture(params=sorted(STORES))
def blobs(request, tmp_path, monkeypatch):
    return STORES[request.param](tmp_path, monkeypatch)


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


@run_async
async def test_gc_deletes_only_what_was_not_put_since(blobs):
    old = await blobs.put(chunks_of(b"old"))
    listed = {blob_id: (size, put_at) async for blob_id, size, put_at in blobs.list()}
    assert listed[old][0] == 3 and abs(listed[old][1] - time.time()) < 120
    assert await blobs.delete_unless_put_since(old, time.time() - 60) == 0  # put just now: kept
    assert await blobs.exists(old)
    assert await blobs.delete_unless_put_since(old, time.time() + 60) == 3
    assert not await blobs.exists(old)
    assert not await blobs.refresh(old)
    again = await blobs.put(chunks_of(b"old"))
    cutoff = time.time() + 60
    assert await blobs.refresh(again)
    assert await blobs.delete_unless_put_since(again, cutoff - 120) == 0
    assert await blobs.delete_unless_put_since("0" * 64, cutoff) == 0


@run_async
async def test_a_refresh_racing_a_delete_either_keeps_the_blob_or_says_it_is_gone(blobs):
    # The collector's guarantee: whoever is told the blob exists (by a refresh) may refer to it.
    outcomes = set()
    for i in range(6):
        blob_id = await blobs.put(chunks_of(b"raced %d" % i))
        await asyncio.sleep(0.2)
        # Put before `since`: it goes, unless refreshed after (files' times are a few ms coarse).
        since = time.time() - 0.05
        if i % 2:  # each may start first
            freed, refreshed = await asyncio.gather(blobs.delete_unless_put_since(blob_id, since),
                                                    blobs.refresh(blob_id))
        else:
            refreshed, freed = await asyncio.gather(blobs.refresh(blob_id),
                                                    blobs.delete_unless_put_since(blob_id, since))
        assert (refreshed and freed == 0 and await blobs.exists(blob_id)) or (
            not refreshed and freed and not await blobs.exists(blob_id)), (freed, refreshed)
        outcomes.add(refreshed)
    print("outcomes seen (refreshed first / deleted first):", outcomes)


@run_async
async def test_presigned_urls(blobs):
    content = os.urandom(3 * MIB)
    blob_id = hashlib.sha256(content).hexdigest()
    put = await blobs.put_url(blob_id, "the tag")
    if put is None:  # a store without them: everything goes through the control plane
        assert blobs.url_for(blob_id) is None
        return
    assert await blobs.put_url("../" + blob_id[3:], "a tag") is None and blobs.url_for("xyz") is None
    # The store takes only the content the name says.
    assert http(put.url, content + b"!", put.headers)[0] >= 400  # SeaweedFS: 400 or 500
    assert http(put.url, content, {})[0] == 403  # the checksum is part of the signature
    assert not await blobs.exists(blob_id)
    assert http(put.url, content, {**put.headers, "x-amz-meta-ember-upload": "another"})[0] == 403
    assert http(put.url, content, put.headers)[0] == 200
    assert await blobs.exists(blob_id) and await blobs.upload_tag(blob_id) == "the tag"
    assert await blobs.upload_tag(await blobs.put(chunks_of(b"not uploaded by URL"))) is None
    get = blobs.url_for(blob_id)
    assert http(get) == (200, content)
    tampered = get.replace(blob_id, hashlib.sha256(b"another").hexdigest())
    assert http(tampered)[0] == 403
    assert http(get.replace("X-Amz-Signature=", "X-Amz-Signature=0"))[0] == 403
    assert http(get.replace("X-Amz-Expires=900", "X-Amz-Expires=9000"))[0] == 403


@run_async
async def test_a_refresh_of_an_old_s3_object_copies_it_onto_itself(tmp_path, monkeypatch):
    from ember.server.blobs import s3

    blobs = s3_store(tmp_path, monkeypatch)
    blob_id = hashlib.sha256(b"old").hexdigest()
    put = await blobs.put_url(blob_id, "tag")
    assert http(put.url, b"old", put.headers)[0] == 200
    before = blobs.client.head_object(Bucket=blobs.bucket, Key=blobs._key(blob_id))["LastModified"]
    monkeypatch.setattr(s3, "COPY_AFTER", -1)  # as if it were old
    time.sleep(1.1)  # LastModified counts whole seconds
    assert await blobs.refresh(blob_id)
    head = blobs.client.head_object(Bucket=blobs.bucket, Key=blobs._key(blob_id))
    assert head["LastModified"] > before and await read(blobs, blob_id) == b"old"
    assert await blobs.upload_tag(blob_id) == "tag"  # kept through the copy


@run_async
async def test_an_expired_s3_url_fails(tmp_path, monkeypatch):
    from ember.server.blobs import s3

    blobs = s3_store(tmp_path, monkeypatch)
    blob_id = await blobs.put(chunks_of(b"soon gone"))
    monkeypatch.setattr(s3, "URL_EXPIRY", 1)
    url = blobs.url_for(blob_id)
    assert http(url) == (200, b"soon gone")
    time.sleep(2.1)
    assert http(url)[0] == 403


def test_blob_store_urls(tmp_path, monkeypatch):
    open_blob_store(str(tmp_path / "made"))
    assert (tmp_path / "made").is_dir()
    with pytest.raises(BlobStoreError, match="name the bucket"):
        open_blob_store("s3:///prefix")
    with pytest.raises(BlobStoreError, match="unknown blob store 'gs'"):
        open_blob_store("gs://bucket")
    for key, value in seaweedfs().env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(BlobStoreError, match="cannot use the bucket 'no-such-bucket'.*Make the bucket"):
        open_blob_store("s3://no-such-bucket/prefix")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(BlobStoreError, match="AWS_SECRET_ACCESS_KEY"):
        open_blob_store(seaweedfs().new_blob_url())
