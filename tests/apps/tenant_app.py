"""An app that two workspaces deploy under the same name: who am I, and what can I reach."""

import os

import ember
from ember.proto import api_pb2

app = ember.App("tenant")


@app.function(secrets=[ember.Secret.from_name("creds")])
def whoami():
    return {"container": os.environ["EMBER_CONTAINER_ID"], "key": os.environ["KEY"],
            "token": (os.environ["EMBER_TOKEN_ID"], os.environ["EMBER_TOKEN_SECRET"])}


@app.function()
def attack(target: dict) -> dict:
    """From inside a container: try to reach another workspace's objects; what each try raised."""
    import grpc

    from ember import config
    from ember._client.auth import metadata
    from ember._client.client import Client
    from ember.proto import api_pb2_grpc

    client = Client.from_env()
    results = {}

    def attempt(name, fn):
        try:
            fn()
            results[name] = "succeeded"
        except Exception as e:
            results[name] = f"{type(e).__name__}: {e}"

    attempt("dict by name", lambda: ember.Dict.from_name(target["dict"]).get("k"))
    attempt("queue by name", lambda: ember.Queue.from_name(target["queue"]).len())
    attempt("secret by name", lambda: client.run(client.rpc(
        "SecretLookup", api_pb2.SecretLookupRequest(name=target["secret"]))))
    attempt("call by id", lambda: client.run(client.rpc("FunctionCallCreate", api_pb2.FunctionCallCreateRequest(
        function_id=target["function_id"], call_id="fc-attack", inputs_complete=True))))
    attempt("outputs by call id", lambda: client.run(client.rpc("FunctionCallGetOutputs", api_pb2.GetOutputsRequest(
        call_id=target["call_id"]))))
    attempt("mint a token", lambda: client.run(client.rpc("TokenCreate", api_pb2.TokenCreateRequest())))

    def connect_as_other_container():
        channel = grpc.insecure_channel(config.grpc_target(os.environ["EMBER_SERVER_URL"]))
        stub = api_pb2_grpc.ContainerApiStub(channel)
        hello = api_pb2.ContainerMessage(hello=api_pb2.ContainerHello(container_id=target["container"]))
        # Its own credential, another's id: the hello names a container this credential is not.
        next(iter(stub.ContainerConnect(iter([hello]), metadata=metadata(config.token()), timeout=10)))

    attempt("connect as another container", connect_as_other_container)

    def connect_as_other_container_over_frames():
        import asyncio

        from ember import _transport

        async def messages():
            yield hello

        async def connect():
            return await _transport.dial(os.environ["EMBER_FRAMES"], os.environ["EMBER_SERVER_URL"])

        async def first_command():
            stream = _transport.FrameStream(connect, "ContainerConnect", config.token(), messages(),
                                            api_pb2.ContainerCommand, fallback=None)
            async for cmd in stream:
                return cmd

        # Where its own stream goes (its worker's frame address), the same refusal.
        hello = api_pb2.ContainerMessage(hello=api_pb2.ContainerHello(container_id=target["container"]))
        asyncio.run(first_command())

    attempt("connect as another container over frames", connect_as_other_container_over_frames)
    return results
