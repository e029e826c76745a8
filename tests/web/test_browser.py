"""The gallery in a real browser (headless Chromium): sign in with Discord, see the grid, search,
open a job, download a picture, paint a region and submit an edit (with a mouse and a finger),
follow a job until its pictures are there; screenshots at a desktop's and a phone's width."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from storage import ImageRecord, JobStatus, new_job_id
from tests.double import Perm
from tests.e2e.conftest import Atelier, png_info
from tests.web.browser import Browser, chromium_or_skip
from tests.web.conftest import made, picture, stored_jobs

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


PAINTED_PIXELS = """
const canvas = document.querySelector("canvas[data-mask]");
const alpha = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < alpha.length; i += 4) if (alpha[i] >= 128) painted += 1;
return painted;
"""


def stroke(browser: Browser, points: list[tuple[int, int]], touch: bool = False) -> None:
    """Drag a mouse (or a finger) over the canvas through `points` (CSS pixels from its
    centre)."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    canvas = browser.css("canvas[data-mask]")
    kind = interaction.POINTER_TOUCH if touch else interaction.POINTER_MOUSE
    actions = ActionBuilder(browser.driver, mouse=PointerInput(kind, "finger" if touch
                                                                else "mouse"))
    (x, y), *rest = points
    actions.pointer_action.move_to(canvas, x, y).pointer_down()
    for x, y in rest:
        actions.pointer_action.move_to(canvas, x, y)
    actions.pointer_action.pointer_up()
    actions.perform()


async def test_paint_a_region_and_submit_an_edit(gallery: Atelier, browser: Browser) -> None:
    double = gallery.double
    job = await made(gallery, "a stone bridge over a river --n 1 --seed 5", double.bob)
    double.oauth_user = double.alice

    def scenario() -> str:
        # From the job's page, `Edit` under its picture.
        browser.go(f"/jobs/{job}")
        browser.until(lambda: browser.path == f"/jobs/{job}", "the job page after signing in")
        browser.css(f'#image-1 a[href="/jobs/{job}/edit/1"]').click()
        browser.until(lambda: browser.path == f"/jobs/{job}/edit/1", "the edit page")
        browser.until(browser.images_loaded, "the picture")
        stage = browser.css("[data-stage]").rect
        assert stage["width"] > 500  # the 128 px picture drawn large enough to paint on

        # Nothing painted yet: Submit says what to do first.
        browser.css("[data-submit]").click()
        error = browser.css("[data-error]")
        browser.until(lambda: error.is_displayed(), "the error")
        assert error.text == "Paint the area to redraw over the picture first."

        # A stroke with the mouse, a bigger brush for a second one, a little erased.
        stroke(browser, [(-150, -120), (-60, -80), (20, -40), (60, 30)])
        first = browser.driver.execute_script(PAINTED_PIXELS)
        assert first > 200
        browser.driver.execute_script(
            "const size = document.querySelector('[data-size]');"
            "size.value = 14; size.dispatchEvent(new Event('input'));")
        stroke(browser, [(120, 120), (160, 150)])
        second = browser.driver.execute_script(PAINTED_PIXELS)
        assert second > first
        browser.css('[data-tool="erase"]').click()
        assert browser.css('[data-tool="erase"]').get_attribute("aria-pressed") == "true"
        stroke(browser, [(-150, -120), (-110, -100)])
        assert browser.driver.execute_script(PAINTED_PIXELS) < second
        browser.css("[data-undo]").click()
        assert browser.driver.execute_script(PAINTED_PIXELS) == second
        browser.css('[data-tool="paint"]').click()
        prompt = browser.css("#edit-prompt")
        assert prompt.get_property("value") == "a stone bridge over a river"
        prompt.clear()
        prompt.send_keys("a stone bridge over a river, a red boat under it")
        assert not error.is_displayed()
        browser.screenshot("7-edit")

        # Submit: the new job's page, which shows its pictures once they are drawn.
        browser.css("[data-submit]").click()
        browser.until(lambda: browser.path.startswith("/jobs/") and browser.path
                      not in (f"/jobs/{job}", f"/jobs/{job}/edit/1"), "the new job's page")
        edit = browser.path.rsplit("/", 1)[1]
        browser.until(lambda: len(browser.all(".picture .frame img")) == 4,
                      "its four pictures")
        assert browser.css("#prompt").text == "a stone bridge over a river, a red boat under it"
        assert browser.css(".lineage a").get_attribute("href").endswith(f"/jobs/{job}#image-1")
        browser.screenshot("8-edited")
        with browser.phone():
            browser.go(f"/jobs/{edit}")
            browser.screenshot("9-edited-phone")
        return edit

    edit = await asyncio.to_thread(scenario)
    result = await double.wait_for(lambda: next(
        (m for m in double.channel_messages(double.channel)
         if f"job `{edit}`" in m.content and m.attachments), None), 30,
        description="the edit in #general")
    assert result.pinged_user_ids == [double.alice.id]
    assert result.content.startswith("**a stone bridge over a river, a red boat under it** — ")


async def test_paint_with_a_finger_at_a_phones_width(gallery: Atelier, browser: Browser) -> None:
    double = gallery.double
    job = await made(gallery, "a lighthouse on a cliff --n 1 --ar 2:3", double.alice)
    double.oauth_user = double.alice

    def scenario() -> None:
        browser.go("/")
        browser.until(lambda: browser.path == "/", "signed in")
        with browser.phone():
            browser.go(f"/jobs/{job}/edit/1")
            browser.until(browser.images_loaded, "the picture")
            width = browser.driver.execute_script("return document.documentElement.clientWidth")
            stage = browser.css("[data-stage]").rect
            assert stage["width"] <= width and stage["x"] >= 0  # no sideways scrolling
            scrolled = browser.driver.execute_script("return window.scrollY")
            stroke(browser, [(-40, -60), (0, -20), (30, 40)], touch=True)
            assert browser.driver.execute_script(PAINTED_PIXELS) > 100
            # Painting with a finger does not scroll the page.
            assert browser.driver.execute_script("return window.scrollY") == scrolled
            browser.screenshot("10-edit-phone")
            browser.css("[data-clear]").click()
            assert browser.driver.execute_script(PAINTED_PIXELS) == 0
            browser.css("#edit-prompt").send_keys(" --steps 999")
            stroke(browser, [(0, 0), (20, 20)], touch=True)
            browser.css("[data-submit]").click()
            error = browser.css("[data-error]")
            browser.until(lambda: error.is_displayed(), "the error")
            assert error.text == "--steps must be a whole number from 1 to 150, got 999"
            assert [c.text for c in error.find_elements("css selector", "code")] == [
                "--steps", "999"]
            browser.driver.execute_script("arguments[0].scrollIntoView()", error)
            browser.screenshot("11-edit-phone-error")

    await asyncio.to_thread(scenario)


async def test_a_waiting_job_shows_its_pictures_once_drawn(gallery: Atelier,
                                                           browser: Browser) -> None:
    """The page of a job still in the queue follows it, and shows its pictures when done."""
    double = gallery.double
    bot = gallery.bot
    assert bot is not None
    (done,) = await stored_jobs(gallery, ["a paper crane"], double.alice)
    waiting = await bot.repo.insert_job(replace(
        await bot.repo.job(done) or pytest.fail("no job"), id=new_job_id(),
        status=JobStatus.QUEUED, prompt="a paper crane, folded from a map",
        created_at=time.time()))
    assert waiting is not None  # saved, never given to the engine: queued until we finish it
    double.oauth_user = double.alice

    def opened() -> None:
        browser.go(f"/jobs/{waiting.id}")
        browser.until(lambda: browser.path == f"/jobs/{waiting.id}", "the job page")
        assert browser.css("[data-state]").text == "Queued"
        assert "mentioning Alice" in browser.css(".waiting").text
        browser.screenshot("12-waiting")

    await asyncio.to_thread(opened)
    stored = await asyncio.to_thread(bot.store.put, picture(4242))
    await bot.repo.complete_job(waiting.id, [ImageRecord(waiting.id, 0, 7, stored.path,
                                                         stored.sha256, 64, 64,
                                                         stored.size_bytes)])

    def shown() -> None:
        browser.until(lambda: len(browser.all(".picture .frame img")) == 1, "the picture")
        assert not browser.all(".waiting")
        assert browser.css("#image-1 .label").text.startswith("Image 1 · seed 7")

    await asyncio.to_thread(shown)


async def test_a_picture_that_cannot_be_edited_says_why(gallery: Atelier,
                                                         browser: Browser) -> None:
    double = gallery.double
    bot = gallery.bot
    assert bot is not None
    job = await made(gallery, "a harbour at night --n 1 --ar 16:9", double.alice)
    double.set_permission_overwrite(double.channel, double.bot_user, deny=Perm.ATTACH_FILES)

    def may_attach() -> bool:
        channel: Any = bot.get_channel(double.channel.id)
        return bool(channel.permissions_for(channel.guild.me).attach_files)

    await double.wait_for(lambda: not may_attach(), description="the overwrite in the cache")
    double.oauth_user = double.alice

    def scenario() -> None:
        browser.go(f"/jobs/{job}/edit/1")
        browser.until(lambda: browser.path == f"/jobs/{job}/edit/1", "the edit page")
        assert browser.css(".edit-panel .error").text.startswith(
            "Atelier cannot post pictures in #general: it lacks Attach Files there.")
        assert not browser.all("canvas") and not browser.all("[data-submit]")
        stage = browser.css("[data-stage]").rect
        assert stage["height"] < 900  # fitted to the window, not the column's width
        browser.screenshot("13-edit-refused")

    await asyncio.to_thread(scenario)
