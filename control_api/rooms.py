"""Rooms and their producers. Anyone may list and read rooms; only a room's
producers change it. Creating a room makes the creator its first producer and
creates its live with a fresh stream key, shown once in that answer."""
from __future__ import annotations

import logging
import secrets
import string
from typing import Sequence

from aiohttp import web
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from control_api.authn import current_member, iso, is_producer, member_json, room_for_producer
from control_api.context import Api, get_api
from control_api.errors import bad_request, conflict, forbidden, json_response, not_found
from control_api.validation import EMAIL, Field, check_multiline, check_text, page, query_bool, read_json
from storage.keys import key_digest, new_stream_key
from storage.lives import compare_and_set
from storage.models import Live, LiveBlock, Member, Producer, Room

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

ROOM_ID_RE = r"{room_id:[a-z0-9_-]{1,32}}"
ROOM_ID_LENGTH = 12  # 36^12: not enumerable by scanning
_ALPHABET = string.ascii_lowercase + string.digits
TITLE = Field(str, min_len=1, max_len=120, check=check_text)
INFO = Field(str, required=False, min_len=0, max_len=2000, check=check_multiline)


def new_room_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(ROOM_ID_LENGTH))


def room_urls(api: Api, room_id: str) -> dict:
    return {
        "watch_url": api.public(f"/watch/{room_id}"),
        "playlist_url": api.public(f"/live/{room_id}/master.m3u8"),
        "thumbnail_url": api.ctx.thumbnail_url(room_id),
    }


def room_json(api: Api, room: Room, live: Live | None) -> dict:
    on_air = live is not None and live.live_state == "live"
    return {
        "room_id": room.room_id,
        "room_title": room.room_title,
        "room_info": room.room_info,
        "live": on_air,
        "viewer_count": api.ctx.viewer_count(room.room_id) if on_air else 0,
        **room_urls(api, room.room_id),
        "created_at": iso(room.created_at),
    }


def live_json(api: Api, live: Live) -> dict:
    # Never the key: only its digest is stored, and the digest stays inside.
    return {
        "live_id": live.live_id,
        "room_id": live.room_id,
        "live_state": live.live_state,
        "rtmp_url": api.ctx.rtmp_url,
        "stream_key": None,
        "stream_key_hidden": True,
        "updated_at": iso(live.updated_at),
    }


def key_answer(api: Api, key: str) -> dict:
    return {
        "stream_key": key,
        "rtmp_url": api.ctx.rtmp_url,
        # OBS: server = rtmp_url, stream key = stream_key.
        "publish_url": f"{api.ctx.rtmp_url}/{key}",
    }


async def rooms_json(api: Api, rooms: Sequence[Room]) -> list[dict]:
    if not rooms:
        return []
    async with api.db.session() as session:
        lives = (await session.execute(select(Live).where(Live.room_id.in_([r.room_id for r in rooms])))).scalars().all()
    by_room = {live.room_id: live for live in lives}
    return [room_json(api, room, by_room.get(room.room_id)) for room in rooms]


@routes.post("/api/v1/rooms")
async def create_room(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    body = await read_json(request, {"room_title": TITLE, "room_info": INFO}, api.max_body_bytes)
    key = new_stream_key()
    async with api.db.session() as session, session.begin():
        room = Room(room_id=new_room_id(), room_title=body["room_title"], room_info=body.get("room_info", ""))
        session.add(room)
        await session.flush()
        session.add(Producer(member_id=member.id, room_id=room.room_id))
        live = Live(room_id=room.room_id, live_key=key_digest(key), live_state="idle")
        session.add(live)
        await session.flush()
    log.info("member %d created room %s (live %d)", member.id, room.room_id, live.live_id)
    # The only answer besides a rotation that carries the key.
    live_answer = {**live_json(api, live), **key_answer(api, key), "stream_key_hidden": False}
    return json_response({"room": room_json(api, room, live), "live": live_answer}, 201)


@routes.get("/api/v1/rooms")
async def list_rooms(request: web.Request) -> web.Response:
    api = get_api(request)
    limit, offset = page(request)
    live_only = query_bool(request, "live")
    query = select(Room).outerjoin(Live, Live.room_id == Room.room_id)
    if live_only:
        query = query.where(Live.live_state == "live")
    async with api.db.session() as session:
        # `total` counts what this filter lists, so a client can page it.
        total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
        # On-air rooms first, then the newest.
        query = query.order_by((Live.live_state == "live").desc(), Room.created_at.desc(), Room.room_id)
        rooms = (await session.execute(query.limit(limit).offset(offset))).scalars().all()
    return json_response({"rooms": await rooms_json(api, rooms), "total": total, "limit": limit, "offset": offset})


async def _live_of(session, room_id: str) -> Live | None:
    return (await session.execute(select(Live).where(Live.room_id == room_id))).scalar_one_or_none()


async def _producers(session, room_id: str) -> list[Member]:
    return list((await session.execute(
        select(Member).join(Producer, Producer.member_id == Member.id)
        .where(Producer.room_id == room_id).order_by(Producer.producer_id)
    )).scalars().all())


@routes.get(f"/api/v1/rooms/{ROOM_ID_RE}")
async def get_room(request: web.Request) -> web.Response:
    api = get_api(request)
    room_id = request.match_info["room_id"]
    async with api.db.session() as session:
        room = await session.get(Room, room_id)
        if room is None:
            raise not_found("no such room")
        live = await _live_of(session, room_id)
        producers = await _producers(session, room_id)
    answer = room_json(api, room, live)
    # Public names only (for reports); emails stay private.
    answer["producers"] = [member_json(m) for m in producers]
    return json_response(answer)


@routes.patch(f"/api/v1/rooms/{ROOM_ID_RE}")
async def update_room(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    body = await read_json(request, {"room_title": Field(str, required=False, min_len=1, max_len=120, check=check_text),
                                     "room_info": INFO}, api.max_body_bytes)
    async with api.db.session() as session, session.begin():
        room = await room_for_producer(session, member, request.match_info["room_id"])
        if "room_title" in body:
            room.room_title = body["room_title"]
        if "room_info" in body:
            room.room_info = body["room_info"]
        live = await _live_of(session, room.room_id)
    return json_response(room_json(api, room, live))


@routes.delete(f"/api/v1/rooms/{ROOM_ID_RE}")
async def delete_room(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    async with api.db.session() as session, session.begin():
        room = await room_for_producer(session, member, request.match_info["room_id"])
        live = await _live_of(session, room.room_id)
        block = await session.get(LiveBlock, live.live_id) if live is not None else None
        if block is not None and block.source != "producer":
            # Deleting must not shed a moderation block (a new room, a new key).
            raise forbidden("the live is blocked by moderation", "moderation_block")
        # Blocking first, as a compare-and-set, closes the race with a publish
        # starting between our check and the delete.
        if live is not None and not await compare_and_set(session, live.live_id, ("idle", "blocked"), "blocked"):
            raise conflict("the room is on air; stop or block the live first", "live_on_air")
        await session.execute(delete(Producer).where(Producer.room_id == room.room_id))
        if live is not None:
            await session.execute(delete(Live).where(Live.live_id == live.live_id))
        await session.execute(delete(Room).where(Room.room_id == room.room_id))
    log.info("member %d deleted room %s", member.id, room.room_id)
    return web.Response(status=204)


@routes.get(f"/api/v1/rooms/{ROOM_ID_RE}/producers")
async def list_producers(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    async with api.db.session() as session:
        room = await room_for_producer(session, member, request.match_info["room_id"])
        producers = await _producers(session, room.room_id)
    return json_response({"producers": [{**member_json(m), "email": m.email} for m in producers]})


@routes.post(f"/api/v1/rooms/{ROOM_ID_RE}/producers")
async def add_producer(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    body = await read_json(request, {"member_id": Field(int, required=False, min_len=1, max_len=2**62),
                                     "email": Field(str, required=False, min_len=3, max_len=254, check=EMAIL.check)},
                           api.max_body_bytes)
    if ("member_id" in body) == ("email" in body):
        raise bad_request("give exactly one of member_id or email",
                          {"member_id": "exactly one of member_id, email", "email": "exactly one of member_id, email"})
    async with api.db.session() as session, session.begin():
        room = await room_for_producer(session, member, request.match_info["room_id"])
        if "member_id" in body:
            other = await session.get(Member, body["member_id"])
        else:
            other = (await session.execute(select(Member).where(Member.email == body["email"].lower()))).scalar_one_or_none()
        if other is None:
            raise not_found("no such member")
        if await is_producer(session, other.id, room.room_id):
            raise conflict("already a producer of this room", "already_producer")
        session.add(Producer(member_id=other.id, room_id=room.room_id))
        try:
            await session.flush()
        except IntegrityError:
            raise conflict("already a producer of this room", "already_producer") from None
    log.info("member %d added producer %d to room %s", member.id, other.id, room.room_id)
    return json_response({"room_id": room.room_id, "producer": member_json(other)}, 201)


@routes.delete(f"/api/v1/rooms/{ROOM_ID_RE}/producers/{{member_id:\\d{{1,18}}}}")
async def remove_producer(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    other_id = int(request.match_info["member_id"])
    async with api.db.session() as session, session.begin():
        room = await room_for_producer(session, member, request.match_info["room_id"])
        if not await is_producer(session, other_id, room.room_id):
            raise not_found("not a producer of this room")
        count = (await session.execute(
            select(func.count()).select_from(Producer).where(Producer.room_id == room.room_id))).scalar_one()
        if count <= 1:
            raise conflict("a room keeps at least one producer", "last_producer")
        await session.execute(delete(Producer).where(Producer.room_id == room.room_id, Producer.member_id == other_id))
    log.info("member %d removed producer %d from room %s", member.id, other_id, room.room_id)
    return web.Response(status=204)


@routes.get(f"/api/v1/rooms/{ROOM_ID_RE}/live")
async def room_live(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    async with api.db.session() as session:
        room = await room_for_producer(session, member, request.match_info["room_id"])
        live = await _live_of(session, room.room_id)
    if live is None:
        raise not_found("this room has no live")
    return json_response(live_json(api, live))
