"""The transport floor: a bare gRPC asyncio bidi-stream ping-pong between two Python processes.

    python bench/grpc_floor.py

Every Ember round trip (a `.remote()` call, a Dict or Queue operation) rides on such messages,
so this is the least one can cost on the machine at hand; compare other figures with it.
"""

import asyncio
import pathlib
import socket
import statistics
import subprocess
import sys
import time

import grpc
import uvloop

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from ember.proto import api_pb2, api_pb2_grpc  # noqa: E402


class Echo(api_pb2_grpc.EmberServicer):
    async def ObjectStream(self, requests, context):
        async for op in requests:
            yield api_pb2.ObjectOpResult(tag=op.tag)


async def serve(port: int):
    server = grpc.aio.server()
    api_pb2_grpc.add_EmberServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def ping(port: int, n: int = 3000, warmup: int = 300) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        queue: asyncio.Queue = asyncio.Queue()

        async def requests():
            while True:
                yield await queue.get()

        call = api_pb2_grpc.EmberStub(channel).ObjectStream(requests(), wait_for_ready=True)
        times = []
        for i in range(n + warmup):
            t = time.perf_counter()
            queue.put_nowait(api_pb2.ObjectOp(tag=i))
            await call.read()
            times.append(time.perf_counter() - t)
        call.cancel()
        return statistics.median(times[warmup:]) * 1000


def main():
    if sys.argv[1:2] == ["serve"]:
        uvloop.run(serve(int(sys.argv[2])))
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "serve", str(port)])
    try:
        print(f"gRPC asyncio bidi ping-pong between two processes, median of 3000: {uvloop.run(ping(port)):.3f} ms")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
