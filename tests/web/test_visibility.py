"""Who sees what in the gallery (SPEC §6 Visibility, §8): a member sees the jobs of the channels
they can view and their own; nobody sees another server's; anything else is one and the same
404, on every route."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.double import Channel, Perm
from tests.e2e.conftest import Atelier, rows
from tests.web.conftest import Visitor, made, stored_jobs


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"waited {timeout} s for {what}")


async def staff_channel(gallery: Atelier) -> Channel:
    """`#staff`: only moderators (and the bot, which posts there) can view it."""
    double = gallery.double
    staff = await double.add_channel("staff")
    double.set_permission_overwrite(staff, double.guild.everyone, deny=Perm.VIEW_CHANNEL)
    moderators = double.guild.role(1250000000000000110)
    double.set_permission_overwrite(staff, moderators, allow=Perm.VIEW_CHANNEL)
    double.set_permission_overwrite(staff, double.bot_user, allow=Perm.VIEW_CHANNEL)
    bot = gallery.bot
    assert bot is not None

    def known() -> bool:
        channel = bot.get_channel(staff.id)
        return channel is not None and len(getattr(channel, "overwrites", {})) == 3

    await until(known, "the bot to see #staff's overwrites")
    return staff


def sha_of(gallery: Atelier, job_id: str) -> str:
    return str(rows(gallery, "SELECT sha256 FROM images WHERE job_id = ? ORDER BY idx",
                    job_id)[0][0])


async def hidden_everywhere(visitor: Visitor, job_id: str, sha: str, csrf: str) -> None:
    """Every route answers `visitor` about this job and picture as about nothing at all."""
    nothing = await visitor.get("/jobs/zzzzzzzz")
    no_picture = await visitor.get(f"/images/{'f' * 64}.png")
    assert nothing.status == 404 and no_picture.status == 404
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}?x=1"):
        page = await visitor.get(path)
        assert (page.status, page.text) == (404, nothing.text), path
    for path in (f"/images/{sha}.png", f"/thumbs/{sha}.webp"):
        page = await visitor.get(path)
        assert (page.status, page.body) == (404, no_picture.body), path
    page = await visitor.post(f"/jobs/{job_id}/favourite", {"index": "1", "csrf": csrf})
    assert (page.status, page.text) == (404, nothing.text)


async def test_a_channel_a_member_cannot_view_never_shows(gallery: Atelier,
                                                          visitors: Any) -> None:
    double = gallery.double
    staff = await staff_channel(gallery)
    public = await made(gallery, "a public notice about the summer party --n 1", double.bob)
    secret = await made(gallery, "a secret plan for the summer party --n 2", double.mod,
                        channel=staff)
    where = f"/g/{double.guild.id}"

    alice = await visitors(double.alice)
    csrf = (await alice.get("/")).csrf()
    assert (await alice.get(where)).job_ids() == [public]
    assert (await alice.get(where + "?q=summer+party")).job_ids() == [public]
    assert (await alice.get(where + "?q=secret")).job_ids() == []
    assert (await alice.get(where + f"?user={double.mod.id}")).job_ids() == []
    await hidden_everywhere(alice, secret, sha_of(gallery, secret), csrf)

    mod = await visitors(double.mod)
    assert (await mod.get(where)).job_ids() == [secret, public]
    page = await mod.get(f"/jobs/{secret}")
    assert page.status == 200 and "#staff" in page.text
    assert (await mod.get(f"/images/{sha_of(gallery, secret)}.png")).status == 200


async def test_lineage_never_leads_into_a_hidden_channel(gallery: Atelier,
                                                         visitors: Any) -> None:
    double = gallery.double
    staff = await staff_channel(gallery)
    parent = await made(gallery, "a lighthouse --n 2", double.alice)
    (hidden_child,) = await stored_jobs(gallery, ["a lighthouse, redrawn in staff"], double.mod,
                                        channel=staff, kind="variation", parent_job=parent,
                                        parent_index=1)
    (child,) = await stored_jobs(gallery, ["a lighthouse, varied"], double.bob,
                                 kind="variation", parent_job=parent, parent_index=2)
    (hidden_parent,) = await stored_jobs(gallery, ["a staff sketch"], double.mod, channel=staff)
    (orphan,) = await stored_jobs(gallery, ["a sketch, varied"], double.mod, kind="variation",
                                  parent_job=hidden_parent, parent_index=1)

    alice = await visitors(double.alice)
    page = await alice.get(f"/jobs/{parent}")
    assert f'href="/jobs/{child}"' in page.text
    assert hidden_child not in page.text
    page = await alice.get(f"/jobs/{orphan}")
    assert page.status == 200
    assert hidden_parent not in page.text and "variation of a job not shown to you" in page.text

    mod = await visitors(double.mod)
    page = await mod.get(f"/jobs/{parent}")
    assert f'href="/jobs/{hidden_child}"' in page.text and f'href="/jobs/{child}"' in page.text
    assert f'href="/jobs/{hidden_parent}#image-1"' in (await mod.get(f"/jobs/{orphan}")).text


async def test_authors_always_see_their_own_jobs(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    art = await double.add_channel("art")
    mine = await made(gallery, "my drawing of a cat --n 1", double.alice, channel=art)
    bobs = await made(gallery, "bob's drawing of a dog --n 1", double.bob, channel=art)
    double.set_permission_overwrite(art, double.alice, deny=Perm.VIEW_CHANNEL)
    bot = gallery.bot
    assert bot is not None
    await until(lambda: bool(getattr(bot.get_channel(art.id), "overwrites", None)),
                "the bot to see #art's overwrite")
    alice = await visitors(double.alice)
    assert (await alice.get(f"/g/{double.guild.id}")).job_ids() == [mine]
    assert (await alice.get(f"/jobs/{mine}")).status == 200
    assert (await alice.get(f"/images/{sha_of(gallery, mine)}.png")).status == 200
    await hidden_everywhere(alice, bobs, sha_of(gallery, bobs), (await alice.get("/")).csrf())


async def test_no_page_or_picture_crosses_servers(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    ours = await made(gallery, "a red fox --n 1", double.alice)
    theirs = await made(gallery, "a blue whale --n 1", double.eve, channel=double.other_channel)
    alice, eve = await visitors(double.alice), await visitors(double.eve)

    nothing = await alice.get("/jobs/zzzzzzzz")
    for path in (f"/g/{double.other_guild.id}", f"/g/{double.other_guild.id}?q=whale",
                 "/g/99999999999999999", "/g/1", "/g/everything", "/jobs/NOT-AN-ID",
                 "/jobs/" + "a" * 200, "/no/such/page"):
        page = await alice.get(path)
        assert (page.status, page.text) == (404, nothing.text), path
    await hidden_everywhere(alice, theirs, sha_of(gallery, theirs),
                            (await alice.get("/")).csrf())
    await hidden_everywhere(eve, ours, sha_of(gallery, ours), (await eve.get("/")).csrf())
    assert (await eve.get(f"/g/{double.guild.id}")).status == 404
    assert (await eve.get(f"/g/{double.other_guild.id}")).job_ids() == [theirs]


async def test_roles_decide_within_minutes(gallery: Atelier, visitors: Any) -> None:
    """A member's roles are read again after five minutes: losing the moderator role closes
    #staff's jobs to them."""
    double = gallery.double
    assert gallery.bot is not None
    web = gallery.bot.gallery
    now = [1000.0]
    web.clock = lambda: now[0]
    staff = await staff_channel(gallery)
    secret = await made(gallery, "a secret plan --n 1", double.owner, channel=staff)
    mod = await visitors(double.mod)
    where = f"/g/{double.guild.id}"
    assert (await mod.get(where)).job_ids() == [secret]
    double.mod.roles[double.guild.id] = []  # no longer a moderator
    now[0] += 60
    assert (await mod.get(where)).job_ids() == [secret]  # the member read a minute ago
    now[0] += 250
    assert (await mod.get(where)).job_ids() == []
    assert (await mod.get(f"/jobs/{secret}")).status == 404
