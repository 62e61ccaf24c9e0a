"""Storage on a real SQLite database: compare-and-set live states, crash
reset, key digests, passwords and the idempotent demo."""
from sqlalchemy import select

from storage.database import Database, sqlite_url
from storage.demo import ensure_demo
from storage.keys import key_digest, new_stream_key
from storage.lives import compare_and_set, live_by_key, reset_crashed_lives
from storage.models import Broadcast, Live, Room
from storage.passwords import hash_password, verify_password


async def make_db(tmp_path):
    db = Database(sqlite_url(tmp_path))
    await db.create_all()
    return db


async def make_live(db, key, room_id="r1", state="idle"):
    async with db.session() as session, session.begin():
        session.add(Room(room_id=room_id, room_title="t"))
        await session.flush()
        live = Live(room_id=room_id, live_key=key_digest(key), live_state=state)
        session.add(live)
        await session.flush()
        return live.live_id


async def test_compare_and_set_changes_only_from_expected_states(tmp_path):
    db = await make_db(tmp_path)
    live_id = await make_live(db, "k1")
    async with db.session() as session, session.begin():
        assert await compare_and_set(session, live_id, ("idle",), "live")
        assert not await compare_and_set(session, live_id, ("idle",), "live")
        assert await compare_and_set(session, live_id, ("idle", "live"), "blocked")
        assert not await compare_and_set(session, live_id, ("idle", "live"), "live")
    async with db.session() as session:
        assert (await session.get(Live, live_id)).live_state == "blocked"
    await db.dispose()


async def test_key_lookup_by_digest_only(tmp_path):
    db = await make_db(tmp_path)
    key = new_stream_key()
    live_id = await make_live(db, key)
    async with db.session() as session:
        assert (await live_by_key(session, key)).live_id == live_id
        assert await live_by_key(session, key + "x") is None
        stored = (await session.execute(select(Live.live_key))).scalar_one()
    assert key not in stored and stored == key_digest(key)
    await db.dispose()


async def test_crash_reset_puts_lives_back_to_idle_and_closes_broadcasts(tmp_path):
    db = await make_db(tmp_path)
    live_id = await make_live(db, "k", state="live")
    blocked_id = await make_live(db, "k2", room_id="r2", state="blocked")
    async with db.session() as session, session.begin():
        session.add(Broadcast(live_id=live_id, remote_address="127.0.0.1"))
    assert await reset_crashed_lives(db) == 1
    async with db.session() as session:
        assert (await session.get(Live, live_id)).live_state == "idle"
        assert (await session.get(Live, blocked_id)).live_state == "blocked"
        broadcast = (await session.execute(select(Broadcast))).scalar_one()
        assert broadcast.ended_at is not None and broadcast.end_reason == "server restart"
    await db.dispose()


def test_password_hash_verifies_and_hides_the_password():
    stored = hash_password("correct horse")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert not verify_password("x", "garbage")


async def test_demo_is_idempotent_and_keeps_its_key(tmp_path):
    db = await make_db(tmp_path)
    first = await ensure_demo(db, tmp_path)
    second = await ensure_demo(db, tmp_path)
    assert first == second
    async with db.session() as session:
        assert (await live_by_key(session, first.stream_key)).live_id == first.live_id
        assert len((await session.execute(select(Room))).scalars().all()) == 1
    assert (tmp_path / "demo.json").stat().st_mode & 0o077 == 0
    await db.dispose()


async def test_purge_deletes_only_expired_tokens(tmp_path):
    from datetime import timedelta

    from storage.models import EmailToken, Member, RefreshToken, utcnow
    from storage.tokens import purge_expired

    db = await make_db(tmp_path)
    now = utcnow()
    async with db.session() as session, session.begin():
        member = Member(email="a@example.com", password_hash="x", nickname="a")
        session.add(member)
        await session.flush()
        for n, delta in enumerate((-10, 10)):
            session.add(RefreshToken(member_id=member.id, family=f"f{n}", token_digest=f"r{n}",
                                     expires_at=now + timedelta(seconds=delta)))
            session.add(EmailToken(member_id=member.id, purpose="verify", token_digest=f"e{n}",
                                   expires_at=now + timedelta(seconds=delta)))
    async with db.session() as session, session.begin():
        assert await purge_expired(session) == 2
    async with db.session() as session:
        assert [t.token_digest for t in (await session.execute(select(RefreshToken))).scalars()] == ["r1"]
        assert [t.token_digest for t in (await session.execute(select(EmailToken))).scalars()] == ["e1"]
    await db.dispose()
