"""The `livecast` command: serve, origin, demo, admin create."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import signal
import sys

from livecast.config import ConfigError, data_dir, load_config


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file overriding configs/default.toml")
    parser.add_argument("--data-dir", metavar="DIR", help="database, HLS files and mail outbox (server.data_dir)")
    parser.add_argument("--rtmp-port", type=int, metavar="N", help="RTMP listen port (rtmp.port)")
    parser.add_argument("--http-port", type=int, metavar="N", help="HTTP listen port (http.port)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livecast", description="RTMP in, Low-Latency HLS out, and the platform around it.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the ingest, packager, origin and API in one process")
    _common(serve)
    serve.add_argument("--demo", action="store_true", help="create the demo room first and print how to stream and watch")
    origin = sub.add_parser("origin", help="serve /live/... from the data dir's HLS files written by a "
                                           "`livecast serve` on the same disk (no ingest, no packaging)")
    origin.add_argument("--config", metavar="FILE", help="TOML file overriding configs/default.toml")
    origin.add_argument("--data-dir", metavar="DIR", help="the data dir `livecast serve` writes (server.data_dir)")
    origin.add_argument("--http-port", type=int, metavar="N", help="HTTP listen port (http.port)")
    origin.set_defaults(rtmp_port=None)
    demo = sub.add_parser("demo", help="create (once) a demo member, room and live; print them as JSON")
    _common(demo)
    admin = sub.add_parser("admin", help="administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create", help="create or promote an admin member")
    _common(create)
    create.add_argument("--email", required=True)
    create.add_argument("--nickname", default="admin")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return parser


def _config(args: argparse.Namespace):
    overrides: dict[str, dict] = {}
    if args.data_dir:
        overrides.setdefault("server", {})["data_dir"] = args.data_dir
    if args.rtmp_port is not None:
        overrides.setdefault("rtmp", {})["port"] = args.rtmp_port
    if args.http_port is not None:
        overrides.setdefault("http", {})["port"] = args.http_port
    return load_config(args.config, overrides=overrides)


def demo_json(public_url: str, rtmp_url: str, demo) -> dict:
    return {
        "room_id": demo.room_id,
        "stream_key": demo.stream_key,
        "rtmp_url": rtmp_url,
        "playlist_url": f"{public_url}/live/{demo.room_id}/master.m3u8",
        "watch_url": f"{public_url}/watch/{demo.room_id}",
        "email": demo.email,
        "password": demo.password,
    }


def _urls(config) -> tuple[str, str]:
    def host(h: str) -> str:
        return "127.0.0.1" if h in ("0.0.0.0", "", "::") else h

    public = config.server.public_url.rstrip("/") or f"http://{host(config.http.host)}:{config.http.port}"
    return public, f"rtmp://{host(config.rtmp.host)}:{config.rtmp.port}/{config.rtmp.app}"


@contextlib.asynccontextmanager
async def _database(config):
    """The configured database, schema created, for one CLI command."""
    from storage.database import Database, sqlite_url

    directory = data_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    db = Database(config.database.url or sqlite_url(directory))
    try:
        await db.create_all()
        yield db
    finally:
        await db.dispose()


async def _demo(config) -> dict:
    from storage.demo import ensure_demo

    async with _database(config) as db:
        demo = await ensure_demo(db, data_dir(config))
    return demo_json(*_urls(config), demo)


def print_how_to(info: dict) -> None:
    server, key = info["rtmp_url"], info["stream_key"]
    print(
        f"""
livecast is running.

Stream from OBS: Settings -> Stream -> Service "Custom...",
  Server:     {server}
  Stream Key: {key}
  (Output: keyframe interval 1-2 s, x264 "veryfast" or faster, tune zerolatency.)
Or from ffmpeg:
  ffmpeg -re -i input.mp4 -c:v libx264 -g 60 -c:a aac -f flv {server}/{key}

Watch:    {info['watch_url']}
Playlist: {info['playlist_url']}

Demo login for the API ({info['playlist_url'].split('/live/')[0]}/api/v1/):
  email {info['email']}  password {info['password']}
Make your own account: POST /api/v1/auth/signup, then open the link in the
verification mail (written to the data dir's outbox/ when no SMTP server is
configured), log in, create a room and read its stream key. docs/api.md walks
through it with curl.
""",
        flush=True,
    )


async def _serve(config, demo: bool) -> None:
    from livecast.app import Livecast

    server = Livecast(config)
    await server.start()
    logging.getLogger("livecast").info(
        "listening: RTMP %s, HTTP %s", server.rtmp_url, server.public_url
    )
    if demo:
        from storage.demo import ensure_demo

        # After start: the URLs carry the ports actually bound.
        print_how_to(demo_json(server.public_url, server.rtmp_url, await ensure_demo(server.db, server.data_dir)))
    await _run_until_signal(server)


async def _run_until_signal(server) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (exit code 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


async def _origin(config) -> None:
    from livecast.origin_app import OriginServer

    server = OriginServer(config)
    await server.start()
    logging.getLogger("livecast").info("origin listening: HTTP %s, serving %s", server.public_url,
                                       server.data_dir / "hls")
    await _run_until_signal(server)


async def _admin_create(config, email: str, nickname: str, password: str) -> int:
    from control_api import create_admin

    async with _database(config) as db:
        return await create_admin(db, email, password, nickname)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"livecast: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.server.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        try:
            asyncio.run(_serve(config, args.demo))
        except OSError as exc:
            print(f"livecast: cannot start: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "origin":
        try:
            asyncio.run(_origin(config))
        except OSError as exc:
            print(f"livecast: cannot start: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "demo":
        print(json.dumps(asyncio.run(_demo(config)), indent=2))
        return 0
    if args.command == "admin" and args.admin_command == "create":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
        if len(password) < 8:
            print("livecast: the password must have at least 8 characters", file=sys.stderr)
            return 2
        try:
            member_id = asyncio.run(_admin_create(config, args.email, args.nickname, password))
        except ValueError as exc:
            print(f"livecast: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"member_id": member_id, "email": args.email, "role": "admin"}))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
