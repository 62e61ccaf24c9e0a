"""A room's live: its state, its stream key and its options.

Producers may block and unblock their own live and rotate its key; the key is
returned only by creation and rotation (only its digest is stored). State
changes are compare-and-set (storage.lives), and blocking or rotating drops
the active publisher through ctx.drop_live after the change is committed, so
the ingest's re-check of the database already sees it.
"""
from __future__ import annotations

import logging

from aiohttp import web
from sqlalchemy import delete, select

from control_api.authn import current_member, live_for_producer
from control_api.context import Api, get_api
from control_api.errors import conflict, forbidden, json_response
from control_api.rooms import key_answer, live_json
from control_api.validation import Field, read_json
from storage.keys import key_digest, new_stream_key
from storage.lives import compare_and_set
from storage.models import Live, LiveBlock, LiveOption, Member, Producer, utcnow

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

LIVE_ID_RE = r"{live_id:\d{1,18}}"
STATE_BODY = {"live_state": Field(str, choices=("idle", "blocked"))}


def drop(api: Api, live_id: int, reason: str) -> bool:
    try:
        return bool(api.ctx.drop_live(live_id, reason))
    except Exception:
        # The state is already stored; the ingest refuses the next publish
        # from it even if this drop failed.
        log.exception("dropping the publisher of live %d failed", live_id)
        return False


MODERATION = ("admin", "reports", "suspension")


async def _record_block(session, live_id: int, source: str, reason: str) -> None:
    block = await session.get(LiveBlock, live_id)
    if block is None:
        session.add(LiveBlock(live_id=live_id, source=source, reason=reason[:200]))
    elif block.source == "producer" or source in MODERATION:
        # Moderation overrides a producer's own block, never the reverse.
        block.source, block.reason = source, reason[:200]


async def set_live_state(api: Api, live_id: int, new: str, reason: str, source: str) -> tuple[str, bool]:
    """Block (from idle or live) or unblock (from blocked only). `source` is
    who asks: "producer" or "admin". Returns (state now, whether a publisher
    was dropped); 409 when a live on air is asked to become idle, 403 when a
    producer tries to lift a moderation block."""
    async with api.db.session() as session, session.begin():
        if new == "blocked":
            await compare_and_set(session, live_id, ("idle", "live"), "blocked")
            await _record_block(session, live_id, source, reason)
        else:
            block = await session.get(LiveBlock, live_id)
            if source == "producer" and block is not None and block.source in MODERATION:
                raise forbidden(f"blocked by moderation ({block.source}); only an admin can lift it", "moderation_block")
            if not await compare_and_set(session, live_id, ("blocked",), "idle"):
                state = (await session.execute(select(Live.live_state).where(Live.live_id == live_id))).scalar_one()
                if state == "live":
                    raise conflict("the live is on air; block it to stop it", "live_on_air")
            await session.execute(delete(LiveBlock).where(LiveBlock.live_id == live_id))
        state = (await session.execute(select(Live.live_state).where(Live.live_id == live_id))).scalar_one()
    dropped = drop(api, live_id, reason) if new == "blocked" else False
    log.info("live %d is now %s (%s)", live_id, state, reason)
    return state, dropped


async def _member_live_ids(session, member_id: int) -> list[int]:
    return list((await session.execute(
        select(Live.live_id).join(Producer, Producer.room_id == Live.room_id).where(Producer.member_id == member_id)
    )).scalars().all())


async def block_member_lives(api: Api, member_id: int, reason: str, source: str) -> list[int]:
    """Block the lives of every room the member produces (a moderation block)
    and drop their publishers; returns the live ids."""
    async with api.db.session() as session, session.begin():
        live_ids = await _member_live_ids(session, member_id)
        for live_id in live_ids:
            await compare_and_set(session, live_id, ("idle", "live"), "blocked")
            await _record_block(session, live_id, source, reason)
    for live_id in live_ids:
        drop(api, live_id, reason)
    if live_ids:
        log.warning("lives %s of member %d blocked: %s", live_ids, member_id, reason)
    return live_ids


async def unblock_member_lives(api: Api, member_id: int) -> list[int]:
    """An admin lifts the blocks on the member's lives; returns those changed."""
    async with api.db.session() as session, session.begin():
        changed = [lid for lid in await _member_live_ids(session, member_id)
                   if await compare_and_set(session, lid, ("blocked",), "idle")]
        if changed:
            await session.execute(delete(LiveBlock).where(LiveBlock.live_id.in_(changed)))
    return changed


async def _producer_live(request: web.Request) -> tuple[Api, Member, Live]:
    """The live of the URL, for a producer of its room (401/403/404 else)."""
    api = get_api(request)
    member = await current_member(request)
    async with api.db.session() as session:
        live = await live_for_producer(session, member, int(request.match_info["live_id"]))
    return api, member, live


@routes.get(f"/api/v1/lives/{LIVE_ID_RE}")
async def get_live(request: web.Request) -> web.Response:
    api, _, live = await _producer_live(request)
    return json_response(live_json(api, live))


@routes.post(f"/api/v1/lives/{LIVE_ID_RE}/key")
async def rotate_key(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    await read_json(request, {}, api.max_body_bytes)
    key = new_stream_key()
    async with api.db.session() as session, session.begin():
        live = await live_for_producer(session, member, int(request.match_info["live_id"]))
        live.live_key = key_digest(key)
        live.updated_at = utcnow()
    # Whoever publishes with the old key is cut off now.
    dropped = drop(api, live.live_id, "key rotated")
    log.info("member %d rotated the key of live %d", member.id, live.live_id)
    return json_response({**live_json(api, live), **key_answer(api, key), "stream_key_hidden": False,
                          "publisher_dropped": dropped})


@routes.put(f"/api/v1/lives/{LIVE_ID_RE}/state")
async def put_state(request: web.Request) -> web.Response:
    api, _, live = await _producer_live(request)
    body = await read_json(request, STATE_BODY, api.max_body_bytes)
    state, dropped = await set_live_state(api, live.live_id, body["live_state"], f"{body['live_state']} by producer",
                                          "producer")
    async with api.db.session() as session:
        live = await session.get(Live, live.live_id)
    return json_response({**live_json(api, live), "publisher_dropped": dropped})


async def _options(session, live_id: int) -> dict:
    option = await session.get(LiveOption, live_id)
    return {"live_id": live_id, "passthrough_only": bool(option.passthrough_only) if option else False}


@routes.get(f"/api/v1/lives/{LIVE_ID_RE}/options")
async def get_options(request: web.Request) -> web.Response:
    api, _, live = await _producer_live(request)
    async with api.db.session() as session:
        return json_response(await _options(session, live.live_id))


@routes.put(f"/api/v1/lives/{LIVE_ID_RE}/options")
async def put_options(request: web.Request) -> web.Response:
    api = get_api(request)
    member = await current_member(request)
    body = await read_json(request, {"passthrough_only": Field(bool)}, api.max_body_bytes)
    async with api.db.session() as session, session.begin():
        live = await live_for_producer(session, member, int(request.match_info["live_id"]))
        option = await session.get(LiveOption, live.live_id)
        if option is None:
            session.add(LiveOption(live_id=live.live_id, passthrough_only=body["passthrough_only"]))
        else:
            option.passthrough_only = body["passthrough_only"]
    async with api.db.session() as session:
        return json_response(await _options(session, live.live_id))
