"""The transport floor: a bare bidi-stream ping-pong between two Python processes, on gRPC
asyncio and on Ember's frame transport (ember/_transport.py), side by side in one run.

    python bench/grpc_floor.py

Every Ember round trip (a `.remote()` call, a Dict or Queue operation) rides on such messages,
so this is the least one can cost on the machine at hand; compare other figures with it.
"""

import asyncio
import contextlib
import pathlib
import socket
import statistics
import subprocess
import sys
import time

import grpc
import uvloop

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from ember import _transport  # noqa: E402
from ember.proto import api_pb2, api_pb2_grpc  # noqa: E402


class Echo(api_pb2_grpc.ClientApiServicer):
    async def ObjectStream(self, requests, context):
        async for op in requests:
            yield api_pb2.ObjectOpResult(tag=op.tag)


async def serve(port: int):
    server = grpc.aio.server()
    api_pb2_grpc.add_ClientApiServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def serve_frames(port: int):
    """Echo each ObjectOp's tag, as Echo does, on frames (no hello: the bare transport)."""
    async def echo(conn: _transport.Connection):
        with contextlib.suppress(_transport.Closed):  # the client is done
            while True:
                _, body = await conn.receive()
                conn.send(_transport.MESSAGE, api_pb2.ObjectOpResult(tag=api_pb2.ObjectOp.FromString(body).tag))

    def connection():
        conn = _transport.Connection()
        asyncio.get_running_loop().create_task(echo(conn))
        return conn

    server = await asyncio.get_running_loop().create_server(connection, "127.0.0.1", port)
    await server.serve_forever()


def timed_median(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:]) * 1000


async def ping_frames(port: int, n: int = 3000, warmup: int = 300) -> float:
    conn = await _transport.Endpoint(host="127.0.0.1", port=port).connect()
    times = []
    for i in range(n + warmup):
        t = time.perf_counter()
        conn.send(_transport.MESSAGE, api_pb2.ObjectOp(tag=i))
        api_pb2.ObjectOpResult.FromString((await conn.receive())[1])
        times.append(time.perf_counter() - t)
    conn.close()
    return timed_median(times, warmup)


async def ping(port: int, n: int = 3000, warmup: int = 300) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        queue: asyncio.Queue = asyncio.Queue()

        async def requests():
            while True:
                yield await queue.get()

        call = api_pb2_grpc.ClientApiStub(channel).ObjectStream(requests(), wait_for_ready=True)
        times = []
        for i in range(n + warmup):
            t = time.perf_counter()
            queue.put_nowait(api_pb2.ObjectOp(tag=i))
            await call.read()
            times.append(time.perf_counter() - t)
        call.cancel()
        return timed_median(times, warmup)


def main():
    if sys.argv[1:2] == ["serve"]:
        uvloop.run(serve(int(sys.argv[2])))
        return
    if sys.argv[1:2] == ["serve-frames"]:
        uvloop.run(serve_frames(int(sys.argv[2])))
        return
    results = {}
    for kind, measure in (("gRPC asyncio", ping), ("frames", ping_frames)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, __file__, "serve" if measure is ping else "serve-frames", str(port)])
        try:
            for _ in range(100):  # until it listens
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            results[kind] = uvloop.run(measure(port))
        finally:
            server.terminate()
            server.wait()
    print("bidi ping-pong between two processes, median of 3000: "
          + ", ".join(f"{kind} {ms:.3f} ms" for kind, ms in results.items()))


if __name__ == "__main__":
    main()
