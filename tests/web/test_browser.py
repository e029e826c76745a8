"""The gallery in a real browser (headless Chromium): sign in with Discord, see the grid, search,
open a job, download a picture; screenshots at a desktop's and a phone's width."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Atelier, png_info
from tests.web.browser import Browser, chromium_or_skip
from tests.web.conftest import made

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(gallery: Atelier, tmp_path: Path) -> Iterator[Browser]:
    chromium_or_skip()
    opened = Browser(gallery.settings.public_url, tmp_path / "chromium", tmp_path / "shots")
    try:
        yield opened
    finally:
        opened.close()


def stored_file(gallery: Atelier, job_id: str, index: int) -> bytes:
    db = sqlite3.connect(gallery.settings.database_path)
    try:
        (path,) = db.execute("SELECT path FROM images WHERE job_id = ? AND idx = ?",
                             (job_id, index)).fetchone()
    finally:
        db.close()
    return (gallery.settings.images_dir / path).read_bytes()


async def test_sign_in_browse_search_open_and_download(gallery: Atelier,
                                                       browser: Browser) -> None:
    double = gallery.double
    fox = await made(gallery, "a red fox in the snow, watercolor", double.alice)
    await made(gallery, "a lighthouse at dusk, oil painting --ar 16:9 --n 2", double.bob)
    tower = await made(gallery, "a lighthouse in a storm --n 1", double.alice)
    await made(gallery, "an owl in a misty forest --ar 2:3 --n 3", double.bob)
    double.oauth_user = double.alice

    def scenario() -> None:
        # Signed out, the gallery sends the browser through Discord and back to the servers.
        browser.go("/")
        browser.until(lambda: browser.path == "/", "the servers page after signing in")
        assert "Your servers" in browser.css("h1").text
        assert "Atelier Test" in browser.css(".servers").text
        assert "Elsewhere" not in browser.css(".servers").text  # alice is not there
        browser.screenshot("1-servers")

        # The grid: every job a card, newest first.
        browser.css(f'.servers a[href="/g/{double.guild.id}"]').click()
        browser.until(lambda: len(browser.all(".card")) == 4, "four jobs in the grid")
        cards = [card.get_attribute("data-job-id") for card in browser.all(".card")]
        assert cards[1] == tower and cards[3] == fox
        assert len(browser.all(".card:first-child .thumbs img")) == 3  # the owl's three
        browser.screenshot("2-grid")
        with browser.phone():
            browser.go(browser.path)
            browser.screenshot("3-grid-phone")

        # Search, as /history does: the grid keeps the matching jobs.
        search = browser.css("input[name=q]")
        search.clear()
        search.send_keys("lighthouse\n")
        browser.until(lambda: "q=lighthouse" in browser.path, "the search")
        browser.until(lambda: len(browser.all(".card")) == 2, "two lighthouses")
        assert tower in [card.get_attribute("data-job-id") for card in browser.all(".card")]
        browser.screenshot("4-search")

        # A job's page: its prompt, its picture full size, the PNG to download.
        browser.css(f'.card[data-job-id="{tower}"] a.thumbs').click()
        browser.until(lambda: browser.path == f"/jobs/{tower}", "the job page")
        assert browser.css("#prompt").text == "a lighthouse in a storm"
        picture = browser.css("#image-1 .frame img")
        browser.until(browser.images_loaded, "the picture")
        assert picture.get_property("naturalWidth") == 128
        copy = browser.css("[data-copy]")
        copy.click()
        browser.until(lambda: copy.text == "Copied", "the prompt copied")
        browser.screenshot("5-job")
        with browser.phone():
            browser.go(browser.path)
            browser.screenshot("6-job-phone")
        browser.css("#image-1 a[download]").click()

    await asyncio.to_thread(scenario)
    downloaded = await asyncio.to_thread(browser.downloaded, f"atelier-{tower}-1.png")
    assert downloaded == stored_file(gallery, tower, 0)
    assert png_info(downloaded)["parameters"].startswith("a lighthouse in a storm")


async def test_favourite_from_the_job_page(gallery: Atelier, browser: Browser) -> None:
    double = gallery.double
    job = await made(gallery, "a cosy teapot, pixel art --n 2", double.bob)
    double.oauth_user = double.alice

    def scenario() -> None:
        browser.go(f"/jobs/{job}")
        browser.until(lambda: browser.path == f"/jobs/{job}", "the job page after signing in")
        browser.css("#image-2 button.fav").click()
        browser.until(lambda: browser.css("#image-2 button.fav").get_attribute("aria-pressed")
                      == "true", "the picture marked ❤️")
        assert browser.css("#image-1 button.fav").get_attribute("aria-pressed") == "false"
        browser.go(f"/g/{double.guild.id}?favourites=1")
        browser.until(lambda: [c.get_attribute("data-job-id") for c in browser.all(".card")]
                      == [job], "the favourite in the grid")

    await asyncio.to_thread(scenario)
