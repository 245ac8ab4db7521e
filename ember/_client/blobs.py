"""Large payloads travel through the control plane's blob store, in chunks."""

import asyncio
import hashlib

from ..config import BLOB_CHUNK, BLOB_THRESHOLD
from ..proto import api_pb2


async def upload(stub, data: bytes) -> str:
    blob_id = hashlib.sha256(data).hexdigest()
    if (await stub.BlobExists(api_pb2.BlobRef(blob_id=blob_id))).exists:
        return blob_id

    async def chunks():
        view = memoryview(data)
        for i in range(0, len(data), BLOB_CHUNK):
            yield api_pb2.BlobChunk(data=bytes(view[i:i + BLOB_CHUNK]))

    ref = await stub.BlobPut(chunks())
    return ref.blob_id


async def upload_file(stub, path: str) -> str:
    """Upload a file without holding it in memory; nothing is sent if the store has it."""
    def digest():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while data := f.read(BLOB_CHUNK):
                h.update(data)
        return h.hexdigest()

    blob_id = await asyncio.to_thread(digest)
    if (await stub.BlobExists(api_pb2.BlobRef(blob_id=blob_id))).exists:
        return blob_id

    async def chunks():
        with open(path, "rb") as f:
            while data := await asyncio.to_thread(f.read, BLOB_CHUNK):
                yield api_pb2.BlobChunk(data=data)

    return (await stub.BlobPut(chunks())).blob_id


async def download_chunks(stub, blob_id: str) -> list[bytes]:
    return [chunk.data async for chunk in stub.BlobGet(api_pb2.BlobRef(blob_id=blob_id))]


async def download(stub, blob_id: str) -> bytes:
    parts = [chunk.data async for chunk in stub.BlobGet(api_pb2.BlobRef(blob_id=blob_id))]
    return b"".join(parts)


def to_payload(data: bytes, upload_sync) -> api_pb2.Payload:
    """Inline when small; `upload_sync(data) -> blob_id` for the rest."""
    if len(data) > BLOB_THRESHOLD:
        return api_pb2.Payload(blob_id=upload_sync(data))
    return api_pb2.Payload(data=data)


def from_payload(payload: api_pb2.Payload, download_sync) -> bytes:
    if payload.blob_id:
        return download_sync(payload.blob_id)
    return payload.data
