"""Outgoing mail (RFC 5321 submission via smtplib, RFC 5322 messages).

smtplib is blocking, so each send runs in a worker thread with a socket
timeout; the event loop never waits on a mail server. With no SMTP host
configured, mails are written to <data_dir>/outbox/*.eml and the path is
logged, so a fresh install can still verify its first account.
"""
from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import socket
import ssl
import threading
import time
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

log = logging.getLogger(__name__)

OUTBOX = "outbox"


class MailError(Exception):
    """The mail could not be handed to the server or written to the outbox."""


class _Cutoff:
    """Lets the event loop end an SMTP session running in a thread: expire()
    shuts its socket down, so a blocked read returns at once and the thread
    finishes; a socket made after expire() is closed before any use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expired = False
        self._smtp: smtplib.SMTP | None = None
        self._raw: socket.socket | None = None

    def attach(self, smtp: smtplib.SMTP, sock: socket.socket) -> socket.socket:
        with self._lock:
            if self._expired:
                sock.close()
                raise smtplib.SMTPServerDisconnected("mail session past its deadline")
            self._smtp, self._raw = smtp, sock
        return sock

    def expire(self) -> None:
        with self._lock:
            self._expired = True
            # After STARTTLS smtp.sock is the TLS socket (the raw one detached).
            sock = getattr(self._smtp, "sock", None) or self._raw
        if sock is not None:
            try:
                # The OS-level shutdown only: safe from another thread.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


class _CutoffSMTP(smtplib.SMTP):
    """smtplib.SMTP whose socket is registered with a _Cutoff."""

    def __init__(self, cutoff: _Cutoff, *args, **kwargs) -> None:
        self._cutoff = cutoff
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        return self._cutoff.attach(self, super()._get_socket(host, port, timeout))


class Mailer:
    def __init__(self, mail_config: SimpleNamespace, data_dir: Path) -> None:
        self.host: str = mail_config.smtp_host
        self.port: int = mail_config.smtp_port
        self.sender: str = mail_config.sender
        # Bounds connect, every read and every write of one SMTP session.
        self.timeout_s: float = float(getattr(mail_config, "timeout_s", 10.0))
        self.starttls: bool = bool(getattr(mail_config, "starttls", False))
        self.username: str = getattr(mail_config, "username", "")
        self.password: str = getattr(mail_config, "password", "")
        self.outbox = Path(data_dir) / OUTBOX

    def build(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(timezone.utc))
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "livecast")
        message.set_content(body)
        return message

    async def send(self, to: str, subject: str, body: str) -> str:
        """Send (or write to the outbox); returns "sent" or the outbox path.
        Raises MailError on failure."""
        message = self.build(to, subject, body)
        if not self.host:
            path = await asyncio.to_thread(self._write_outbox, message)
            log.warning("no SMTP server configured: mail %r to %s written to %s", subject, to, path)
            return str(path)
        cutoff = _Cutoff()
        try:
            # The socket timeout bounds each read; wait_for bounds the whole
            # session, and on expiry the cutoff shuts the socket down so the
            # thread ends too (audit: a server trickling an endless multi-line
            # reply, each line within the timeout, would otherwise hold a
            # default-executor thread, shared with the segment writes, forever).
            await asyncio.wait_for(asyncio.to_thread(self._smtp_send, message, cutoff), self.timeout_s * 3 + 1)
        except (OSError, smtplib.SMTPException, asyncio.TimeoutError) as exc:
            cutoff.expire()
            log.error("mail %r to %s failed: %s", subject, to, type(exc).__name__)
            raise MailError(str(exc)) from None
        log.info("mail %r sent to %s", subject, to)
        return "sent"

    def _smtp_send(self, message: EmailMessage, cutoff: "_Cutoff | None" = None) -> None:
        with _CutoffSMTP(cutoff or _Cutoff(), self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(message)

    def _write_outbox(self, message: EmailMessage) -> Path:
        self.outbox.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        tmp = self.outbox / (name + ".tmp")
        # 0600: the mail carries a single-use token for the account.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(message))
        final = self.outbox / name
        os.replace(tmp, final)
        return final
