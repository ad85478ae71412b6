"""The public page's test rig: Debian's chromium driven by Playwright, the regulation's colours, screenshots.

Playwright's own browser download cannot work here (no network but the package registries), so the
browser is the system's ``chromium`` (scripts/bootstrap.sh installs it), found with require_tool."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.helpers import require_tool

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Bảng 1 of QĐ 1459/QĐ-TCMT as printed (AQI range -> R;G;B), written here from the decision, not read
#: from store/vn_aqi_breakpoints.yaml: the page must show the regulation's colours, whatever the model file says.
REGULATION_COLOURS = (
    (0, 50, (0, 228, 0)),
    (51, 100, (255, 255, 0)),
    (101, 150, (255, 126, 0)),
    (151, 200, (255, 0, 0)),
    (201, 300, (143, 63, 151)),
    (301, 500, (126, 0, 35)),
)
NO_AQI_RGB = (0xBD, 0xBD, 0xBD)  # the page's grey for a station without an AQI


def regulation_rgb(aqi: int) -> tuple[int, int, int]:
    for low, high, rgb in REGULATION_COLOURS:
        if low <= aqi <= high:
            return rgb
    raise AssertionError(f"AQI {aqi} is outside Bảng 1")


def parse_colour(text: str) -> tuple[int, int, int]:
    """``#00E400`` or ``rgb(0, 228, 0)`` as an RGB triple."""
    text = text.strip()
    if m := re.fullmatch(r"#([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})", text):
        return tuple(int(g, 16) for g in m.groups())  # type: ignore[return-value]
    if m := re.fullmatch(r"rgba?\((\d+),\s*(\d+),\s*(\d+)(?:,\s*[\d.]+)?\)", text):
        return tuple(int(g) for g in m.groups())  # type: ignore[return-value]
    raise AssertionError(f"not a colour: {text!r}")


@dataclass
class Browsing:
    page: Page
    base: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        """Requests to anything but our server (a CDN, map tiles): must stay empty."""
        return [u for u in self.requests if not (u.startswith(self.base + "/") or u.startswith("data:"))]


@contextmanager
def browse(base: str, tmp_path: Path) -> Iterator[Browsing]:
    chromium = require_tool("chromium", package="chromium")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh each test
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1800},
            locale="vi-VN",
            timezone_id="Europe/Paris",  # not Vietnam: the page must show Vietnam time whatever the browser's zone
        )
        try:
            page = context.new_page()
            seen = Browsing(page, base)
            page.on("request", lambda r: seen.requests.append(r.url))
            page.on("pageerror", lambda e: seen.errors.append(f"page error: {e}"))
            page.on(
                "console", lambda m: seen.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
            )
            yield seen
        finally:
            context.close()


def keep_screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    """A full-page PNG in the test's tmp dir, copied to $QUANTRAC_PAGE_SCREENSHOTS if set (tests/README.md)."""
    shot = tmp_path / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    keep = os.environ.get("QUANTRAC_PAGE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(keep) / shot.name)
    return shot
