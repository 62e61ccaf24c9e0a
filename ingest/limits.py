"""Every deadline and limit of the RTMP ingest, in one place.

Each field says why it has its default; docs/limits.md is generated from
these fields (`limits_table()`), and a test checks the two agree.
Deadlines are in seconds (they drive asyncio timeouts, not media time).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields


def _limit(default, why: str):
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class IngestLimits:
    handshake_timeout: float = _limit(
        10.0,
        "Seconds from TCP accept to a complete C0-C2 handshake. Real clients "
        "need one round trip; a slowloris sender trickling bytes is cut here.",
    )
    publish_timeout: float = _limit(
        10.0,
        "Seconds from the end of the handshake to an accepted `publish`. OBS "
        "and FFmpeg pipeline connect/createStream/publish in under a second; "
        "a connection that never publishes only holds a slot.",
    )
    first_media_timeout: float = _limit(
        10.0,
        "Seconds from Publish.Start to the first audio/video message. "
        "Encoders send sequence headers at once; a silent publisher would "
        "hold the live 'on air' with nothing to show.",
    )
    idle_timeout: float = _limit(
        30.0,
        "Seconds without any byte from the peer before the connection is "
        "closed. A 30 fps publisher sends every 33 ms; 30 s lets OBS's "
        "reconnect take over after a network drop (it republishes and takes "
        "over anyway).",
    )
    authorize_timeout: float = _limit(
        10.0,
        "Seconds the PublishAuthority may take to decide on a publish (a "
        "database query); past it the publish is refused so OBS does not "
        "hang on 'Starting stream…'.",
    )
    write_timeout: float = _limit(
        10.0,
        "Seconds a write may wait for the peer to drain its socket. We only "
        "send small control replies, so a peer that does not read is stuck "
        "or hostile.",
    )
    max_message_size: int = _limit(
        8 << 20,
        "Largest RTMP message accepted (bytes). A 4K60 keyframe at 50 Mbit/s "
        "is about 3 MiB; 8 MiB leaves headroom while halving what one "
        "message can pin (the protocol allows 16 MiB - 1).",
    )
    max_buffered_bytes: int = _limit(
        16 << 20,
        "Bytes held in all incomplete messages of one connection: stops a "
        "peer from opening 64 chunk streams with a large message each.",
    )
    max_chunk_streams: int = _limit(
        64,
        "Chunk stream ids one connection may use. Publishers use 3 to 8 "
        "(OBS: 2-7, FFmpeg: 2-8); each costs a little state.",
    )
    max_streams: int = _limit(
        8,
        "createStream calls per connection. A publisher needs one; FFmpeg "
        "and OBS call it once per publish.",
    )
    max_connections: int = _limit(
        2000,
        "Open TCP connections in total. Each idle connection costs a few "
        "KiB; this bounds memory and file descriptors (keep below ulimit -n).",
    )
    max_connections_per_address: int = _limit(
        32,
        "Open connections from one remote IP address. A studio behind one "
        "NAT runs a few encoders; one host cannot take all slots.",
    )
    failed_publishes_per_minute: int = _limit(
        10,
        "Failed publish attempts (bad app, bad or unknown key, refused) per "
        "address within `failed_publish_window` (a minute by default, hence the "
        "name), after which that address is "
        "refused at connect: stops stream-key guessing.",
    )
    failed_publish_window: float = _limit(
        60.0, "Seconds over which failed publish attempts are counted."
    )
    read_size: int = _limit(
        65536,
        "Bytes read from the socket at once: bounds what one read can add to "
        "the parser's input before it is consumed.",
    )
    out_chunk_size: int = _limit(
        4096,
        "Chunk size we announce and send with (OBS uses 4096 too); our "
        "replies fit in one chunk.",
    )
    window_ack_size: int = _limit(
        2_500_000,
        "Window Acknowledgement Size we announce (as gortmplib and FFmpeg's "
        "listen mode do); also our ack window until the peer announces one.",
    )
    codec_probe_timeout: float = _limit(
        3.0,
        "Seconds of media after which `update()` reports codecs even if one "
        "sequence header (e.g. audio) never came.",
    )
    refuse_linger: float = _limit(
        1.0,
        "Seconds a refused connection stays open after the error onStatus so "
        "the client reads it before the close (closing at once can reset the "
        "socket and lose the reply).",
    )
    max_name_length: int = _limit(
        256, "Longest app name or stream key accepted, in characters."
    )
    amf_max_depth: int = _limit(
        16, "Deepest AMF0 nesting accepted in a command or metadata."
    )
    amf_max_items: int = _limit(
        4096, "Most AMF0 values in one message (onMetaData has about 20)."
    )
    stats_window: float = _limit(
        5.0, "Seconds over which stats() averages bitrate and frame rate."
    )


def limits_table(limits: IngestLimits | None = None) -> str:
    """The Markdown table of docs/limits.md."""
    limits = limits or IngestLimits()
    rows = ["| Limit | Default | Why |", "|---|---|---|"]
    for f in fields(IngestLimits):
        rows.append(f"| `{f.name}` | {getattr(limits, f.name)!r} | {f.metadata['why']} |")
    return "\n".join(rows)
