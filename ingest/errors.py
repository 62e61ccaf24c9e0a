"""The two error families of the ingest (h11 style).

RemoteProtocolError: the peer misbehaved; the session is finished after it.
It carries the onStatus code to answer with when one applies.
LocalProtocolError: we misused our own API; a bug.
"""
from __future__ import annotations


class RemoteProtocolError(Exception):
    def __init__(self, message: str, *, status: str = "NetConnection.Connect.Rejected") -> None:
        super().__init__(message)
        self.status = status


class UnsupportedCodec(RemoteProtocolError):
    """A codec we recognise but do not handle, or do not recognise at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status="NetStream.Publish.BadName")


class LocalProtocolError(Exception):
    """Our own code called the protocol object out of order."""
