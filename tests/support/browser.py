"""Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
from __future__ import annotations

import contextlib
import tempfile

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@contextlib.asynccontextmanager
async def chromium_page():
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="livecast-chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=FLAGS
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                yield page
            finally:
                await context.close()


async def video_state(page) -> dict:
    return await page.evaluate(
        """() => { const v = document.querySelector('video');
                   return { t: v.currentTime, w: v.videoWidth, h: v.videoHeight, paused: v.paused,
                            state: window.livecastPlayer && window.livecastPlayer.state }; }"""
    )


async def wait_playing(page, *, beyond: float = 0.0, timeout: float = 30.0) -> dict:
    """Wait until currentTime has advanced past `beyond` + 1 s with a picture."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state = await video_state(page)
    while loop.time() < deadline:
        state = await video_state(page)
        if state["w"] > 0 and state["t"] > beyond + 1.0:
            return state
        await asyncio.sleep(0.25)
    raise AssertionError(f"video did not play: {state}")
