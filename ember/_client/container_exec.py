"""A command run in a running container, over one ContainerExec stream: what `ember container
exec` and `ember shell` drive (and what a sandbox's exec can: the same stream, the same calls).

Made and used on the client's event loop: write() and write_eof() feed its stdin, resize() its
terminal's size, and outputs() yields what it prints until it ends (ExecOutput with exited set:
its exit code, or an error saying why it could not run or was cut short).
"""

import asyncio
from collections.abc import AsyncIterator

import grpc

from ..proto import api_pb2
from .client import Client, translate


class ContainerExec:
    def __init__(self, client: Client, container_id: str, argv: list[str], *, tty: bool = False, rows: int = 0,
                 cols: int = 0, workdir: str = "", env: dict[str, str] | None = None,
                 secret_ids: list[str] | None = None):
        self.client = client
        self.start = api_pb2.ExecStart(container_id=container_id, argv=argv, tty=tty, rows=rows, cols=cols,
                                       workdir=workdir, env=env or {}, secret_ids=secret_ids or [])
        self._requests: asyncio.Queue = asyncio.Queue()
        self._accepted = asyncio.Event()  # the control plane's first (empty) output came: it took the command

    def write(self, data: bytes):
        self._requests.put_nowait(api_pb2.ExecInput(data=data))

    def write_eof(self):
        self._requests.put_nowait(api_pb2.ExecInput(eof=True))

    def resize(self, rows: int, cols: int):
        self._requests.put_nowait(api_pb2.ExecInput(rows=rows, cols=cols))

    async def _messages(self):
        yield api_pb2.ContainerExecRequest(start=self.start)
        await self._accepted.wait()
        # Open until the command ends: a closed request stream is the control plane's sign that
        # the client went away (and it kills the command).
        while (item := await self._requests.get()) is not None:
            yield api_pb2.ContainerExecRequest(input=item)

    async def outputs(self) -> AsyncIterator[api_pb2.ExecOutput]:
        call = self.client.stub.ContainerExec(self._messages())
        try:
            async for out in call:
                self._accepted.set()
                yield out
                if out.exited:
                    return
        except grpc.aio.AioRpcError as e:
            raise translate(e, f"exec in container {self.start.container_id}") from None
        finally:
            # Refused before its first output too: its requests' generator ends rather than wait forever.
            self._accepted.set()
            self._requests.put_nowait(None)
            call.cancel()
