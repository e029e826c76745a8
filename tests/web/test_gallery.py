"""The gallery over HTTP (SPEC §8), against the real bot and the Discord double: pages, filters,
pictures and ❤️ as a signed-in member sees them."""

from __future__ import annotations

import hashlib
import io
import re
import sqlite3
import time
from typing import Any

from PIL import Image

from tests.e2e.conftest import Atelier, button, finished, png_info, rows
from tests.web.conftest import made, stored_jobs

PAGE_SIZE = 48  # SPEC §8


def shas_on(text: str) -> list[str]:
    """The pictures a job page shows, in order."""
    return list(dict.fromkeys(re.findall(r'<img src="/images/([0-9a-f]{64})\.png"', text)))


def stored_bytes(gallery: Atelier, sha: str) -> bytes:
    (row,) = rows(gallery, "SELECT path FROM images WHERE sha256 = ?", sha)
    return (gallery.settings.images_dir / row["path"]).read_bytes()


async def test_servers_page_lists_the_servers_both_share(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    no_bot = await double.add_guild("Without the bot", members=[double.alice], with_bot=False)
    alice = await visitors(double.alice)
    page = await alice.get("/")
    assert page.status == 200
    assert f'href="/g/{double.guild.id}"' in page.text and "Atelier Test" in page.text
    assert 'href="/g/dm"' in page.text
    assert f"/g/{double.other_guild.id}" not in page.text  # alice is not there
    assert f"/g/{no_bot.id}" not in page.text and "Without the bot" not in page.text
    assert "Alice" in page.text  # who is signed in

    eve = await visitors(double.eve)
    page = await eve.get("/")
    assert f'href="/g/{double.other_guild.id}"' in page.text
    assert f"/g/{double.guild.id}" not in page.text


async def test_grid_shows_48_jobs_a_page_newest_first(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    ids = await stored_jobs(gallery, [f"a numbered lighthouse {n}" for n in range(50)],
                            double.bob)
    alice = await visitors(double.alice)
    first = await alice.get(f"/g/{double.guild.id}")
    assert first.status == 200
    assert first.job_ids() == ids[::-1][:PAGE_SIZE]
    newest = ids[-1]
    card = first.text.split(f'data-job-id="{newest}"')[1].split("</article>")[0]
    (sha,) = re.findall(r'src="/thumbs/([0-9a-f]{64})\.webp"', card)
    assert rows(gallery, "SELECT job_id FROM images WHERE sha256 = ?", sha)[0][0] == newest
    assert f'href="/jobs/{newest}"' in card
    assert "a numbered lighthouse 49" in card and "Bob" in card
    assert 'rel="next" href="/g/' in first.text and "page=2" in first.text
    assert 'rel="prev"' not in first.text

    second = await alice.get(f"/g/{double.guild.id}?page=2")
    assert second.job_ids() == ids[::-1][PAGE_SIZE:]
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    beyond = await alice.get(f"/g/{double.guild.id}?page=3")
    assert beyond.status == 200 and beyond.job_ids() == []
    assert "No more jobs" in beyond.text
    # Nonsense in the query string is ignored, not an error.
    odd = await alice.get(f"/g/{double.guild.id}?page=-4&user=x&kind=nope&model=")
    assert odd.status == 200 and odd.job_ids() == first.job_ids()


async def test_search_and_filters(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    fox, storm = await stored_jobs(gallery, ["a red fox in the snow", "a lighthouse in a storm"],
                                   double.alice)
    owl, fox_cub = await stored_jobs(gallery, ["an owl at dusk", "a fox cub sleeping"],
                                     double.bob, model="anime", kind="variation")
    alice = await visitors(double.alice)
    where = f"/g/{double.guild.id}"

    async def shown(query: str) -> list[str]:
        page = await alice.get(where + query)
        assert page.status == 200, page.text
        return page.job_ids()

    # The same full-text search as /history: words, prefixes, phrases.
    assert await shown("?q=fox") == [fox_cub, fox]
    assert await shown("?q=lig") == [storm]
    assert await shown('?q="red+fox"') == [fox]
    assert await shown("?q=%22%22%22") == []  # stray quotes are text, never an error
    # Member, model and kind; together with search.
    assert await shown(f"?user={double.bob.id}") == [fox_cub, owl]
    assert await shown(f"?user={double.bob.id}&q=fox") == [fox_cub]
    assert await shown("?model=anime") == [fox_cub, owl]
    assert await shown("?kind=imagine") == [storm, fox]
    page = await alice.get(where + f"?user={double.bob.id}")
    assert "by Bob" in page.text  # the member filter, named
    # Favourites: the pictures this person marked ❤️.
    assert await shown("?favourites=1") == []
    job_page = await alice.get(f"/jobs/{owl}")
    marked = await alice.post(f"/jobs/{owl}/favourite", {"index": "1", "csrf": job_page.csrf()})
    assert marked.status == 303
    assert await shown("?favourites=1") == [owl]
    bob = await visitors(double.bob)
    assert (await bob.get(where + "?favourites=1")).job_ids() == []  # alice's, not bob's


async def test_job_page_shows_everything_about_a_job(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    handle = await double.slash("imagine", {
        "prompt": "a misty harbour at dawn --n 2 --seed 42 --steps 7 --cfg 6.5",
        "negative": "people, <script>alert(1)</script>"}, user=double.alice)
    result = await finished(handle)
    parent = re.search(r"job `([a-z0-9]{8})`", result.content)[1]  # type: ignore[index]
    variation = await double.click(result, button(result, "V2"), user=double.bob)
    child = re.search(r"job `([a-z0-9]{8})`", (await finished(variation)).content)[1]  # type: ignore[index]

    alice = await visitors(double.alice)
    page = await alice.get(f"/jobs/{parent}")
    assert page.status == 200
    text = page.text
    assert f'data-job-id="{parent}"' in text
    assert '<h1 class="prompt-text" id="prompt">a misty harbour at dawn</h1>' in text
    assert "people, &lt;script&gt;alert(1)&lt;/script&gt;" in text  # escaped, never run
    assert "<script>alert" not in text
    for label, value in (("Model", "tiny"), ("Steps", "7"), ("CFG scale", "6.5"),
                         ("Size", "128×128"), ("Seeds", "1: 42 · 2: 43"), ("Author", "Alice"),
                         ("Kind", "imagine"), ("Channel", "#general"), ("Status", "done")):
        assert re.search(rf"<dt>{label}</dt><dd>(<[^>]+>)?{re.escape(value)}", text), label
    assert "Copy prompt" in text
    (message,) = rows(gallery, "SELECT message_id FROM jobs WHERE id = ?", parent)
    link = f"https://discord.com/channels/{double.guild.id}/{double.channel.id}/{message[0]}"
    assert text.count(f'href="{link}"') == 2  # under each picture
    shas = shas_on(text)
    assert len(shas) == 2
    for number, sha in enumerate(shas, start=1):
        assert (f'href="/images/{sha}.png" download="atelier-{parent}-{number}.png"') in text
        parameters = png_info(stored_bytes(gallery, sha))["parameters"]
        assert parameters.startswith("a misty harbour at dawn\nNegative prompt: people,")
        assert f"Seed: {41 + number}" in parameters
        escaped = parameters.replace("<", "&lt;").replace(">", "&gt;")
        assert f"<pre>{escaped}</pre>" in text  # its `parameters`, as the PNG says
    assert text.count('action="/jobs/' + parent + '/favourite"') == 2
    # Lineage, both ways.
    assert f'href="/jobs/{child}"' in text and "variation of image 2 by Bob" in text
    child_page = await alice.get(f"/jobs/{child}")
    assert f'href="/jobs/{parent}#image-2">image 2 of job {parent}</a>' in child_page.text
    assert "Author</dt><dd><a" in child_page.text and "Bob" in child_page.text


async def test_pictures_are_the_stored_files_cached_by_their_hash(gallery: Atelier,
                                                                visitors: Any) -> None:
    double = gallery.double
    job = await made(gallery, "a glass teapot --n 1 --ar 16:9", double.alice)
    alice = await visitors(double.alice)
    (sha,) = shas_on((await alice.get(f"/jobs/{job}")).text)

    picture = await alice.get(f"/images/{sha}.png")
    assert picture.status == 200
    assert picture.body == stored_bytes(gallery, sha)
    assert hashlib.sha256(picture.body).hexdigest() == sha
    assert picture.headers["Content-Type"] == "image/png"
    assert picture.headers["ETag"] == f'"{sha}"'
    assert "immutable" in picture.headers["Cache-Control"]
    assert "private" in picture.headers["Cache-Control"]
    again = await alice.get(f"/images/{sha}.png", headers={"If-None-Match": f'"{sha}"'})
    assert again.status == 304 and again.body == b""

    thumbnail = await alice.get(f"/thumbs/{sha}.webp")
    assert thumbnail.status == 200 and thumbnail.headers["Content-Type"] == "image/webp"
    assert thumbnail.headers["ETag"] == f'"{sha}"'
    small = Image.open(io.BytesIO(thumbnail.body))
    assert small.format == "WEBP" and small.size == (256, 146)  # 168×96 scaled to fit 256²
    made_once = list((gallery.settings.data_dir / "thumbs").rglob(f"{sha}*.webp"))
    assert len(made_once) == 1
    written = made_once[0].stat().st_mtime_ns
    assert (await alice.get(f"/thumbs/{sha}.webp")).body == thumbnail.body
    assert made_once[0].stat().st_mtime_ns == written  # made once, then served


async def test_favourites_need_the_form_token(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    job = await made(gallery, "a velvet armchair --n 2", double.bob)
    alice = await visitors(double.alice)
    page = await alice.get(f"/jobs/{job}")
    favourites = "SELECT job_id, idx FROM favourites WHERE user_id = ?"

    refused = await alice.post(f"/jobs/{job}/favourite", {"index": "2"})
    assert refused.status == 403 and "reload it and try again" in refused.text
    forged = await alice.post(f"/jobs/{job}/favourite", {"index": "2", "csrf": "guess"})
    assert forged.status == 403
    assert rows(gallery, favourites, double.alice.id) == []

    added = await alice.post(f"/jobs/{job}/favourite", {"index": "2", "csrf": page.csrf()})
    assert added.status == 303 and added.location == f"/jobs/{job}#image-2"
    assert [tuple(row) for row in rows(gallery, favourites, double.alice.id)] == [(job, 1)]
    page = await alice.get(f"/jobs/{job}")
    assert page.text.count('aria-pressed="true"') == 1
    assert (await alice.post(f"/jobs/{job}/favourite", {"index": "9", "csrf": page.csrf()})
            ).status == 404
    await alice.post(f"/jobs/{job}/favourite", {"index": "2", "csrf": page.csrf()})
    assert rows(gallery, favourites, double.alice.id) == []  # pressed again: taken back

    bob = await visitors(double.bob)  # another session: another token
    assert (await bob.post(f"/jobs/{job}/favourite", {"index": "1", "csrf": page.csrf()})
            ).status == 403


async def test_direct_message_jobs_belong_to_their_author(gallery: Atelier,
                                                          visitors: Any) -> None:
    double = gallery.double
    dm = double.dm_channel(double.alice)
    handle = await double.slash("imagine", {"prompt": "a secret garden --n 1"},
                                user=double.alice, channel=dm)
    job = re.search(r"job `([a-z0-9]{8})`", (await finished(handle)).content)[1]  # type: ignore[index]
    alice, bob = await visitors(double.alice), await visitors(double.bob)

    mine = await alice.get("/g/dm")
    assert mine.job_ids() == [job]
    assert (await alice.get(f"/g/{double.guild.id}")).job_ids() == []  # not a server's job
    page = await alice.get(f"/jobs/{job}")
    assert page.status == 200 and "Direct messages" in page.text
    assert f"https://discord.com/channels/@me/{dm.id}/" in page.text
    (sha,) = shas_on(page.text)
    assert (await alice.get(f"/images/{sha}.png")).status == 200

    assert (await bob.get("/g/dm")).job_ids() == []
    assert (await bob.get(f"/jobs/{job}")).status == 404
    assert (await bob.get(f"/images/{sha}.png")).status == 404
    assert (await bob.get(f"/thumbs/{sha}.webp")).status == 404


async def test_the_pages_are_guarded_against_other_sites(gallery: Atelier,
                                                         visitors: Any) -> None:
    alice = await visitors(gallery.double.alice)
    page = await alice.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-store"
    style = re.search(r'href="(/static/gallery\.css\?v=[0-9a-f]+)"', page.text)
    assert style is not None
    sheet = await alice.get(style[1])
    assert sheet.status == 200 and b".grid" in sheet.body
    assert sheet.headers["Content-Type"].startswith("text/css")


async def test_the_grid_lists_jobs_not_yet_done_nowhere(gallery: Atelier,
                                                        visitors: Any) -> None:
    """Queued, failed and cancelled jobs have no pictures: the grid leaves them out, and
    their page says what became of them."""
    double = gallery.double
    (failed,) = await stored_jobs(gallery, ["a broken clock"], double.alice)
    db = sqlite3.connect(gallery.settings.database_path)
    with db:
        db.execute("UPDATE jobs SET status = 'failed', error = 'out of memory' WHERE id = ?",
                   (failed,))
        db.execute("DELETE FROM images WHERE job_id = ?", (failed,))
    db.close()
    alice = await visitors(double.alice)
    assert (await alice.get(f"/g/{double.guild.id}")).job_ids() == []
    page = await alice.get(f"/jobs/{failed}")
    assert page.status == 200 and "failed — out of memory" in page.text
    assert "No pictures: the job is failed." in page.text


async def test_a_job_whose_message_was_deleted_stays(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    (job,) = await stored_jobs(gallery, ["a rusty robot"], double.alice,
                               message_id=1250000000000009999, deleted_at=time.time())
    alice = await visitors(double.alice)
    assert (await alice.get(f"/g/{double.guild.id}")).job_ids() == [job]
    page = await alice.get(f"/jobs/{job}")
    assert "done (message deleted)" in page.text
    assert "discord.com/channels" not in page.text  # nothing to open
