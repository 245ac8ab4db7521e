"""Regenerate api_pb2.py and api_pb2_grpc.py from api.proto (needs grpcio-tools)."""

import pathlib
import sys

from grpc_tools import protoc


def main() -> None:
    here = pathlib.Path(__file__).resolve().parent
    root = here.parent.parent
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        str(here / "api.proto"),
    ])
    sys.exit(code)


if __name__ == "__main__":
    main()
