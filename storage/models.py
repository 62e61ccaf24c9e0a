"""The data model of ARCHITECTURE.md, in one place (SQLAlchemy 2 declarative).

Tables added later are new tables, never new columns on existing ones, so a
database made by an older release keeps working after create_all().
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    BigInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

LIVE_STATES = ("idle", "live", "blocked")
ROLES = ("member", "admin")
REPORT_CONTENT_MAX = 100


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (CheckConstraint("role IN ('member', 'admin')", name="member_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    nickname: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), default="member")
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Room(Base):
    __tablename__ = "rooms"

    room_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    room_title: Mapped[str] = mapped_column(String(120))
    room_info: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Producer(Base):
    __tablename__ = "producers"
    __table_args__ = (UniqueConstraint("member_id", "room_id", name="producer_once"),)

    producer_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id", ondelete="CASCADE"), index=True)


class Live(Base):
    __tablename__ = "lives"
    __table_args__ = (CheckConstraint("live_state IN ('idle', 'live', 'blocked')", name="live_state"),)

    live_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.room_id", ondelete="CASCADE"), unique=True)
    # SHA-256 of the stream key, hex; the key itself is never stored.
    live_key: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    live_state: Mapped[str] = mapped_column(String(16), default="idle")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Broadcast(Base):
    """One row per publish session: the history of a live."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    live_id: Mapped[int] = mapped_column(ForeignKey("lives.live_id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    encoder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    video_codec: Mapped[str | None] = mapped_column(String(32), nullable=True)
    audio_codec: Mapped[str | None] = mapped_column(String(32), nullable=True)
    bytes_received: Mapped[int] = mapped_column(BigInteger, default=0)
    remote_address: Mapped[str] = mapped_column(String(64), default="")
    end_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("reported_user_id", "report_user_id", name="report_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reported_user_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    report_user_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(String(REPORT_CONTENT_MAX))
    count: Mapped[int] = mapped_column(Integer, default=1)
    create_date: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LiveOption(Base):
    """Per-live switches (a separate table so older databases need no migration)."""

    __tablename__ = "live_options"

    live_id: Mapped[int] = mapped_column(ForeignKey("lives.live_id", ondelete="CASCADE"), primary_key=True)
    passthrough_only: Mapped[bool] = mapped_column(Boolean, default=False)


# --- control API tables (control_api/) --------------------------------------


class RefreshToken(Base):
    """One refresh token of a login. Tokens of one login share a family; using
    a token rotates it (used_at set, a successor issued in the same family),
    and presenting a used token again revokes the whole family (RFC 6819
    5.2.2.3: a replayed refresh token means it was stolen)."""

    __tablename__ = "api_refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    # SHA-256 of the token, hex; the token itself is never stored.
    token_digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EmailToken(Base):
    """A single-use token sent by mail: email verification or password reset."""

    __tablename__ = "api_email_tokens"
    __table_args__ = (CheckConstraint("purpose IN ('verify', 'reset')", name="email_token_purpose"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ReportEvent(Base):
    """Every report made, one row each: the per-reporter hourly limit counts
    these (the reports table keeps one row per reporter and reported member)."""

    __tablename__ = "api_report_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_user_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    reported_user_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class LiveBlock(Base):
    """Who blocked a live and why, while it is blocked: a producer may lift
    only a block they set themselves, not one set by moderation (an admin,
    the report threshold, a suspension)."""

    __tablename__ = "api_live_blocks"

    live_id: Mapped[int] = mapped_column(ForeignKey("lives.live_id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))   # producer, admin, reports, suspension
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
