"""What the benchmarks share: the 720p30 2.5 Mbit/s test source and
per-process CPU and memory readings from /proc."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def encode_720p_source(path: Path, seconds: int) -> int:
    """1280x720 30 fps H.264 2.5 Mbit/s (2 s GOP) + AAC 128k as FLV, encoded
    once so publishers can send it with -c copy. Returns its packet count."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k",
         "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    ).stdout.split()
    return sum(int(n) for n in out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def descendants(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out += [int(child)] + descendants(int(child))
    except OSError:
        pass
    return out


def children_cpu_s(pid: int) -> float:
    total = 0.0
    for child in descendants(pid):
        try:
            total += proc_cpu_s(child)
        except OSError:
            pass
    return total
