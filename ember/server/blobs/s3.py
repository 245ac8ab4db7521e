"""Blobs in an S3-compatible bucket: s3://BUCKET/PREFIX keeps the blob abcd... at PREFIX/abcd....

The endpoint and keys come from the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION), read by boto3. Every boto3 call
blocks, so each runs in a thread, a chunk at a time for content.

Large blobs need not pass through the control plane: `url_for` and `put_url` give presigned
URLs (SigV4) to fetch a blob, or to upload the content of a named blob, directly. A presigned
PUT carries the blob's sha256 as its signed `x-amz-checksum-sha256` header, so the store
itself refuses any other content under that name: content addressing holds without the
control plane reading the bytes.

Why deleting stays safe (the blob collector's guarantee, blob_gc.py): S3 has no delete that is
atomic with a put (a conditional delete compares ETags, which a put of the same bytes keeps). A
blob counts as put at the later of its LastModified and the last time this process put,
refreshed or handed out an upload URL for it (`_touched`); that record and the look-then-delete
of `delete_unless_put_since` happen under one lock per blob, so in this process nothing that
counts as a put comes between the look and the delete. Uploads through a presigned URL bypass
the process, but each is preceded by handing out its URL (which counts as a put) and followed
by the uploader's BlobExists (a refresh) before anything refers to the blob, and the upload
itself sets LastModified. A refresh also copies the object onto itself when its LastModified is
old, so that what counts as put survives this process (a restarted control plane's collector
starts its retention afresh in any case).
"""

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import tempfile
import time
import weakref
from collections.abc import AsyncIterable

from ...config import BLOB_CHUNK
from . import BlobNotFound, BlobStore, BlobStoreError, PutUrl, is_blob_id

URL_EXPIRY = 15 * 60       # seconds a presigned URL works (for --blob-retention, which must be longer)
COPY_AFTER = 5 * 60        # a refresh copies an object onto itself once its LastModified is older
SPOOL_IN_MEMORY = 16 << 20  # a put keeps up to this much in memory before spooling to a file
MAX_TOUCHED = 100_000      # records of puts kept before the old ones are forgotten
TAG = "ember-upload"        # the object's metadata that says which upload URL it came through


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str, client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or _client()
        self._touched: dict[str, float] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        try:
            # A listing, not a HEAD of the bucket: some stores answer that without checking the keys.
            self.client.list_objects_v2(Bucket=bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as e:
            raise BlobStoreError(
                f"cannot use the bucket {bucket!r} at {self.client.meta.endpoint_url}: {_why(e)}. Make the bucket, "
                "and give its endpoint and keys in AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None

    def _key(self, blob_id: str) -> str:
        return self.prefix + blob_id

    def _lock(self, blob_id: str) -> asyncio.Lock:
        # Weakly held: a blob's lock lives while someone holds it or waits for it, no longer.
        lock = self._locks.get(blob_id)
        if lock is None:
            lock = self._locks[blob_id] = asyncio.Lock()
        return lock

    async def _head(self, blob_id: str) -> dict | None:
        try:
            return await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=self._key(blob_id))
        except self.client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    async def put(self, chunks: AsyncIterable[bytes]) -> str:
        # The key is the content's hash, known only at the end: spool, then upload under it. (A put
        # cancelled during that upload may still land, whole: the collector deletes it in time.)
        digest = hashlib.sha256()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as f:
            async for chunk in chunks:
                digest.update(chunk)
                await asyncio.to_thread(f.write, chunk)
            blob_id = digest.hexdigest()
            f.seek(0)
            async with self._lock(blob_id):
                self._touched[blob_id] = time.time()
                if not await self._refresh(blob_id):  # the same bytes are there already: not sent again
                    await asyncio.to_thread(self.client.upload_fileobj, f, self.bucket, self._key(blob_id))
        return blob_id

    async def get(self, blob_id: str):
        if not is_blob_id(blob_id):
            raise BlobNotFound(blob_id)
        try:
            obj = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=self._key(blob_id))
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFound(blob_id) from None
        body = obj["Body"]
        try:
            while data := await asyncio.to_thread(body.read, BLOB_CHUNK):
                yield data
        finally:
            body.close()

    async def exists(self, blob_id: str) -> bool:
        return is_blob_id(blob_id) and await self._head(blob_id) is not None

    async def delete(self, blob_id: str):
        if is_blob_id(blob_id):
            async with self._lock(blob_id):
                self._touched.pop(blob_id, None)
                await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(blob_id))

    async def refresh(self, blob_id: str) -> bool:
        if not is_blob_id(blob_id):
            return False
        async with self._lock(blob_id):
            return await self._refresh(blob_id)

    async def _refresh(self, blob_id: str) -> bool:
        head = await self._head(blob_id)
        if head is None:
            self._touched.pop(blob_id, None)
            return False
        self._touched[blob_id] = time.time()
        if time.time() - head["LastModified"].timestamp() > COPY_AFTER:
            key = self._key(blob_id)
            # An object copied onto itself must change something: its metadata says when.
            metadata = {**head.get("Metadata", {}), "refreshed": str(int(time.time()))}
            await asyncio.to_thread(self.client.copy, {"Bucket": self.bucket, "Key": key}, self.bucket, key,
                                    ExtraArgs={"MetadataDirective": "REPLACE", "Metadata": metadata})
        return True

    async def list(self):
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        pages = iter(pages)
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            for obj in page.get("Contents", []):
                blob_id = obj["Key"][len(self.prefix):]
                if is_blob_id(blob_id):
                    yield blob_id, obj["Size"], self._put_at(blob_id, obj["LastModified"])

    def _put_at(self, blob_id: str, last_modified: datetime.datetime) -> float:
        return max(last_modified.timestamp(), self._touched.get(blob_id, 0.0))

    async def delete_unless_put_since(self, blob_id: str, since: float) -> int:
        if not is_blob_id(blob_id):
            return 0
        async with self._lock(blob_id):
            if self._touched.get(blob_id, 0.0) >= since:
                return 0
            head = await self._head(blob_id)
            if head is None or self._put_at(blob_id, head["LastModified"]) >= since:
                return 0
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(blob_id))
            self._touched.pop(blob_id, None)
            return head["ContentLength"]

    def url_for(self, blob_id: str) -> str | None:
        if not is_blob_id(blob_id):
            return None
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                                        "Key": self._key(blob_id)},
                                                  ExpiresIn=URL_EXPIRY)

    async def put_url(self, blob_id: str, tag: str) -> PutUrl | None:
        if not is_blob_id(blob_id):
            return None
        checksum = base64.b64encode(bytes.fromhex(blob_id)).decode()
        async with self._lock(blob_id):
            self._touched[blob_id] = time.time()  # an upload is on its way (see the module's doc)
        if len(self._touched) > MAX_TOUCHED:
            self._forget_touched_before(time.time() - 2 * URL_EXPIRY - COPY_AFTER)
        # Both headers are signed: the uploader can change neither the content nor the tag.
        url = self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": self._key(blob_id), "ChecksumSHA256": checksum,
                                  "Metadata": {TAG: tag}},
            ExpiresIn=URL_EXPIRY)
        return PutUrl(url=url, headers={"x-amz-checksum-sha256": checksum, f"x-amz-meta-{TAG}": tag})

    def _forget_touched_before(self, cutoff: float):
        # Anyone may ask for upload URLs of any ids: keep the record of them bounded. What it forgets
        # is older than any URL's life, and no older than COPY_AFTER than its object's LastModified.
        for blob_id in [b for b, t in self._touched.items() if t < cutoff]:
            del self._touched[blob_id]

    async def upload_tag(self, blob_id: str) -> str | None:
        head = await self._head(blob_id) if is_blob_id(blob_id) else None
        return None if head is None else head.get("Metadata", {}).get(TAG)


def _client():
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not a line per credential lookup
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise BlobStoreError("S3 blob storage needs boto3: pip install 'ember[s3]'") from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Other S3-compatible stores (SeaweedFS, MinIO, Ceph) mostly serve buckets by path, not by host name.
    style = "path" if endpoint else "auto"
    # A session of its own: the default one keeps the first credentials it found, whatever the env says later.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region,
                        config=Config(signature_version="s3v4", s3={"addressing_style": style},
                                      max_pool_connections=32))


def _why(e: Exception) -> str:
    response = getattr(e, "response", None)
    if response:
        error = response.get("Error", {})
        return f"{error.get('Code')} {error.get('Message') or ''}".strip()
    return str(e)
