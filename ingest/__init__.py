"""RTMP ingest: accepts publishers, authenticates their stream key and turns
RTMP messages into codec-level frames published to a per-live StreamHub."""
