"""The segment store: HLS files (init segments, segments, parts, playlists,
packager state) in a directory per room and rendition under one root.

    <root>/<room_id>/<rendition>/<file>

Writes are atomic (write a temporary file in the same directory, then
rename), so a reader — the origin, nginx, another process — never sees half
a file. The methods are blocking file I/O: async code calls the `a*`
variants, which run them in a worker thread.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from pathlib import Path

# Ids become path components: allow no separators, no dot-dot, bounded length.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SegmentStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # ---------------------------------------------------------------- paths
    @staticmethod
    def valid_id(value: str) -> bool:
        return bool(_ID_RE.match(value))

    @staticmethod
    def valid_file(name: str) -> bool:
        return bool(_FILE_RE.match(name)) and ".." not in name

    def room_dir(self, room_id: str) -> Path:
        if not self.valid_id(room_id):
            raise ValueError(f"bad room id {room_id!r}")
        return self.root / room_id

    def rendition_dir(self, room_id: str, rendition: str) -> Path:
        if not self.valid_id(rendition):
            raise ValueError(f"bad rendition {rendition!r}")
        return self.room_dir(room_id) / rendition

    def path(self, room_id: str, rendition: str, name: str) -> Path:
        if not self.valid_file(name):
            raise ValueError(f"bad file name {name!r}")
        return self.rendition_dir(room_id, rendition) / name

    # ------------------------------------------------------ blocking file I/O
    def write(self, room_id: str, rendition: str, name: str, data: bytes) -> None:
        target = self.path(room_id, rendition, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)  # atomic on POSIX within one filesystem
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def read(self, room_id: str, rendition: str, name: str) -> bytes | None:
        try:
            return self.path(room_id, rendition, name).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, room_id: str, rendition: str, name: str) -> bool:
        return self.path(room_id, rendition, name).is_file()

    def delete(self, room_id: str, rendition: str, name: str) -> None:
        self.path(room_id, rendition, name).unlink(missing_ok=True)

    def list(self, room_id: str, rendition: str) -> list[str]:
        d = self.rendition_dir(room_id, rendition)
        try:
            return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def delete_room(self, room_id: str) -> None:
        shutil.rmtree(self.room_dir(room_id), ignore_errors=True)

    # ----------------------------------------------------------- async forms
    async def awrite(self, room_id: str, rendition: str, name: str, data: bytes) -> None:
        await asyncio.to_thread(self.write, room_id, rendition, name, data)

    async def aread(self, room_id: str, rendition: str, name: str) -> bytes | None:
        return await asyncio.to_thread(self.read, room_id, rendition, name)

    async def adelete_many(self, room_id: str, rendition: str, names: list[str]) -> None:
        def run() -> None:
            for n in names:
                self.delete(room_id, rendition, n)
        await asyncio.to_thread(run)
