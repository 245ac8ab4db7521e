"""Client-side machinery: connection, serialization, blobs, code packaging, sync/async bridging."""
