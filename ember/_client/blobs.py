"""Large payloads, code packages, layer archives and volume files: blobs, named by their sha256.

Where the control plane's blob store has URLs of its own (S3's presigned ones), a blob moves
between this process and the store directly, over HTTP, with the control plane only handing out
the URL (BlobUrl); else it goes through the control plane in chunks (BlobGet, BlobPut). An
upload names its content's hash up front; afterwards BlobExists says whether the store took it,
and only then is the blob referred to. A store that this process cannot reach (its address seen
only by the control plane) is worked around through the control plane, with a warning.
"""

import asyncio
import hashlib
import http.client
import io
import logging
import os
import pathlib
import time
import urllib.parse
import zipfile
from collections.abc import AsyncIterator

from ..config import BLOB_CHUNK, BLOB_THRESHOLD
from ..exception import ConnectionError as EmberConnectionError
from ..proto import api_pb2

log = logging.getLogger("ember")

HTTP_TIMEOUT = 60.0        # seconds a transfer may stall before it fails
CONNECT_TIMEOUT = 10.0     # seconds to reach the store before going through the control plane instead
RETRY_DIRECT_AFTER = 60.0  # seconds a store out of reach is not tried again
HTTP_CHUNK = 4 * BLOB_CHUNK  # bytes per read of a direct download, per write of an upload from a file


class BlobTransferError(EmberConnectionError):
    """The blob store refused a direct transfer (an expired or tampered URL, or a missing blob)."""


async def upload(stub, data: bytes) -> str:
    blob_id = hashlib.sha256(data).hexdigest() if len(data) < BLOB_THRESHOLD else await asyncio.to_thread(
        _sha256, data)
    if (await stub.BlobExists(api_pb2.BlobRef(blob_id=blob_id))).exists:
        return blob_id
    if await _put_direct(stub, blob_id, data, len(data)):
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
            while data := f.read(HTTP_CHUNK):
                h.update(data)
        return h.hexdigest()

    blob_id = await asyncio.to_thread(digest)
    if (await stub.BlobExists(api_pb2.BlobRef(blob_id=blob_id))).exists:
        return blob_id
    with open(path, "rb") as f:
        if await _put_direct(stub, blob_id, f, os.fstat(f.fileno()).st_size):
            return blob_id

    async def chunks():
        with open(path, "rb") as f:
            while data := await asyncio.to_thread(f.read, BLOB_CHUNK):
                yield api_pb2.BlobChunk(data=data)

    return (await stub.BlobPut(chunks())).blob_id


async def chunks_of(stub, blob_id: str) -> AsyncIterator[bytes]:
    """The blob's content, in chunks as they arrive."""
    url = await _get_url(stub, blob_id)
    if url:
        try:
            response = await asyncio.to_thread(_open, "GET", url, {}, None)
        except OSError as e:
            _unreachable(url, e)
        else:
            try:
                while data := await asyncio.to_thread(response.read, HTTP_CHUNK):
                    yield data
            finally:
                response.close()
            return
    async for chunk in stub.BlobGet(api_pb2.BlobRef(blob_id=blob_id)):
        yield chunk.data


async def download_chunks(stub, blob_id: str) -> list[bytes]:
    return [chunk async for chunk in chunks_of(stub, blob_id)]


async def download(stub, blob_id: str) -> bytes:
    url = await _get_url(stub, blob_id)
    if url:
        try:
            return await asyncio.to_thread(_get_all, url)  # read whole, into one buffer
        except OSError as e:
            _unreachable(url, e)
    parts = [chunk.data async for chunk in stub.BlobGet(api_pb2.BlobRef(blob_id=blob_id))]
    return b"".join(parts)


def unpack_code(cache: pathlib.Path, blob_id: str, data: bytes) -> pathlib.Path:
    """A function's source (a zip blob) unpacked into cache/blob_id, once: containers and warm
    parents of a worker share it. Returns where it is."""
    dest = cache / blob_id
    tmp = cache / f".{blob_id}.{os.getpid()}"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(tmp)
    try:
        os.rename(tmp, dest)
    except OSError:
        pass  # another container unpacked it first
    return dest


def to_payload(data: bytes, upload_sync) -> api_pb2.Payload:
    """Inline when small; `upload_sync(data) -> blob_id` for the rest."""
    if len(data) > BLOB_THRESHOLD:
        return api_pb2.Payload(blob_id=upload_sync(data))
    return api_pb2.Payload(data=data)


def from_payload(payload: api_pb2.Payload, download_sync) -> bytes:
    if payload.blob_id:
        return download_sync(payload.blob_id)
    return payload.data


# ---- direct transfers, over HTTP(S)


async def _get_url(stub, blob_id: str) -> str:
    return (await stub.BlobUrl(api_pb2.BlobUrlRequest(blob_id=blob_id))).url


async def _put_direct(stub, blob_id: str, body, size: int) -> bool:
    """Upload body (bytes, or a file at its start) to the store directly, if it has URLs; whether
    it did and the control plane now knows the blob."""
    put = await stub.BlobUrl(api_pb2.BlobUrlRequest(blob_id=blob_id, upload=True))
    if not put.url:
        return False
    try:
        await asyncio.to_thread(_put, put.url, dict(put.headers), body, size)
    except OSError as e:
        _unreachable(put.url, e)
        return False
    if not (await stub.BlobExists(api_pb2.BlobRef(blob_id=blob_id))).exists:
        # The store has it, but the control plane could not tell that this upload put it there
        # (it restarted since it handed out the URL): send it through the control plane.
        log.warning("the control plane did not take the direct upload of blob %s; sending it through the control "
                    "plane", blob_id)
        return False
    return True


def _open(method: str, url: str, headers: dict, body, size: int | None = None) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    if time.monotonic() < _unreachable_until.get(parts.netloc, 0.0):
        raise OSError("it was out of reach a moment ago")
    Connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = Connection(parts.netloc, timeout=CONNECT_TIMEOUT, blocksize=HTTP_CHUNK)
    try:
        conn.connect()
    except OSError:
        _unreachable_until[parts.netloc] = time.monotonic() + RETRY_DIRECT_AFTER
        raise
    conn.sock.settimeout(HTTP_TIMEOUT)
    if size is not None:
        headers = {**headers, "Content-Length": str(size)}
    conn.request(method, f"{parts.path}?{parts.query}", body=body, headers=headers)
    response = conn.getresponse()
    if response.status != 200:
        detail = response.read(2000).decode(errors="replace")
        conn.close()
        raise BlobTransferError(f"the blob store refused the {method} of {parts.path.rsplit('/', 1)[-1]}: HTTP "
                                f"{response.status} {response.reason}: {detail}")
    return response


def _put(url: str, headers: dict, body, size: int):
    with _open("PUT", url, headers, body, size) as response:
        response.read()


def _get_all(url: str) -> bytes:
    with _open("GET", url, {}, None) as response:
        return response.read()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unreachable(url: str, error: OSError):
    if isinstance(error, BlobTransferError):
        raise error
    endpoint = urllib.parse.urlsplit(url).netloc
    if endpoint not in _warned:  # once per process: each blob after it goes the same way
        _warned.add(endpoint)
        log.warning("cannot reach the blob store at %s directly (%s): moving blobs through the control plane",
                    endpoint, error)


_warned: set[str] = set()
_unreachable_until: dict[str, float] = {}  # endpoint -> when to try it directly again
