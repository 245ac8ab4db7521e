"""The control plane: the single source of truth, serving the gRPC API in api.proto."""
