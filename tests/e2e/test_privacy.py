"""Privacy inside a server (SPEC §6 Visibility) end to end: a job is shown only to the people
who can view the channel it was made in; pictures from an NSFW channel stay in NSFW channels;
posting pictures again needs the member's send permissions and is limited per person."""

from __future__ import annotations

import discord
import pytest

from bot import limits
from bot.ui import result_view, single_image_view
from tests.double import Callback, InteractionHandle, Message, Perm
from tests.e2e.conftest import Atelier, button, finished, job_id_of, pixels, posted, rows
from tests.e2e.test_history import (
    BADGE,
    history,
    item_lines,
    job_id_of_line,
    open_menu,
    seed_job,
)
from tests.e2e.test_recall import recall

pytestmark = pytest.mark.e2e

OPEN = "atelier:h:open"
CANNOT_POST = ("You cannot post pictures in this channel: that needs the Send Messages and "
               "Attach Files permissions here.")


def no_job(job_id: str) -> str:
    return f"No job `{job_id}` in this server."


def nsfw_only(job_id: str) -> str:
    return (f"Job `{job_id}` was made in an NSFW channel; its pictures can be posted or used "
            "only in NSFW channels.")


async def refused(handle: InteractionHandle) -> str:
    """The private answer that refused an interaction."""
    response = await handle.response()
    assert response.type == 4 and response.ephemeral, response
    return str(response.data["content"])


def public(atelier: Atelier) -> list[Message]:
    return [m for m in atelier.double.messages if not m.ephemeral and not m.deleted]


def choices(found: list[dict[str, str]]) -> set[str]:
    return {choice["value"] for choice in found}


async def info_embed(atelier: Atelier, message: Message, user: object) -> Callback:
    handle = await atelier.double.context_menu("Image info", message, user=user)  # type: ignore[arg-type]
    response = await handle.response()
    assert response.ephemeral
    return response


async def test_jobs_of_a_channel_bob_cannot_view_are_hidden_from_him_everywhere(
        atelier: Atelier) -> None:
    double = atelier.double
    alice, bob = double.alice, double.bob
    staff = await double.add_channel("staff", viewers=[alice])
    open_job = await seed_job(atelier, "a fox in the open", 1)
    grid = await finished(await double.slash(
        "imagine", {"prompt": "the staff party plans --seed 5", "count": 2}, user=alice,
        channel=staff))
    secret = job_id_of(grid)
    assert rows(atelier, "SELECT channel_id FROM jobs WHERE id = ?", secret)[0][0] == staff.id

    # /history: Bob's list, count, menu and search know nothing of it; Alice's show it.
    listing = await history(atelier, by=bob)
    assert listing.content.split("\n")[0] == "**History** — page 1 of 1 · 1 job"
    assert [job_id_of_line(line) for line in item_lines(listing)] == [open_job.id]
    assert [option["value"] for option in open_menu(listing)["options"]] == [open_job.id]
    assert secret not in listing.content and "staff party" not in listing.content
    searched = await double.slash("history", {"search": "staff party"}, user=bob)
    assert await refused(searched) == "No finished jobs found — matching `staff party`."
    own = await history(atelier, by=alice)
    assert [job_id_of_line(line) for line in item_lines(own)] == [secret, open_job.id]

    # /recall's autocomplete, by prompt or by id.
    for typed in ("", "staff party", secret[:4], secret):
        found = await double.autocomplete("recall", {"job": typed}, focused="job", user=bob)
        assert secret not in choices(found), typed
    found = await double.autocomplete("recall", {"job": "staff party"}, focused="job",
                                      user=alice)
    assert choices(found) == {secret}

    # /recall and a crafted `Open…` pick are answered as for an id that does not exist.
    assert await refused(await recall(atelier, "zzzzzzzz", user=bob)) == no_job("zzzzzzzz")
    assert await refused(await recall(atelier, secret, user=bob)) == no_job(secret)
    forged = await double.select(listing, OPEN, [secret], user=bob, force=True)
    assert await refused(forged) == no_job(secret)

    # Alice may post it where Bob is; he still learns nothing more, nor builds on it.
    shown = await finished(await recall(atelier, secret, user=alice))
    assert shown.channel_id == double.channel.id
    answer = await info_embed(atelier, shown, bob)
    assert answer.data["content"] == no_job(secret) and not answer.data.get("embeds")
    for label in ("U1", "V2", "🔄"):
        pressed = await double.click(shown, button(shown, label), user=bob)
        assert await refused(pressed) == no_job(secret), label
    [embed] = (await info_embed(atelier, shown, alice)).data["embeds"]
    assert embed["title"] == f"Job {secret}"
    assert public(atelier) == [grid, shown]
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 2


async def test_lineage_and_deleted_channels_follow_who_can_view_them(atelier: Atelier) -> None:
    double = atelier.double
    alice, bob, mod = double.alice, double.bob, double.mod
    staff = await double.add_channel("staff", viewers=[alice, mod])
    grid = await finished(await atelier.imagine("a red fox --seed 3", count=1))
    parent = job_id_of(grid)
    # Alice varies it inside #staff: the variation belongs to #staff.
    there = await finished(await recall(atelier, parent, user=alice, channel=staff))
    child = await finished(await double.click(there, button(there, "V1"), user=alice), 60)
    child_id = job_id_of(child)

    def made_from_it(response: Callback) -> str:
        [embed] = response.data["embeds"]
        return next(f["value"] for f in embed["fields"] if f["name"] == "Made from it")

    assert made_from_it(await info_embed(atelier, grid, alice)) == (
        f"`{child_id}` — variation of image 1 (done)")
    assert made_from_it(await info_embed(atelier, grid, bob)) == "nothing yet"

    def listed(message: Message) -> list[str]:
        return [job_id_of_line(line) for line in item_lines(message)]

    assert listed(await history(atelier, by=mod)) == [child_id, parent]
    # Once #staff is gone nobody can view it: its jobs are their author's alone.
    await double.delete_channel(staff)
    await double.wait_for(lambda: atelier.bot is not None
                          and atelier.bot.get_channel(staff.id) is None)
    assert listed(await history(atelier, by=mod)) == [parent]
    assert listed(await history(atelier, by=alice)) == [child_id, parent]
    assert await refused(await recall(atelier, child_id, user=mod)) == no_job(child_id)


async def test_pictures_from_an_nsfw_channel_are_posted_again_only_in_nsfw_channels(
        atelier: Atelier) -> None:
    double = atelier.double
    bob = double.bob
    grid = await finished(await double.slash(
        "imagine", {"prompt": "after dark --seed 4", "count": 2}, user=double.alice,
        channel=double.nsfw_channel))
    job = job_id_of(grid)

    assert await refused(await recall(atelier, job, user=bob)) == nsfw_only(job)
    listing = await history(atelier, by=bob)
    assert await refused(await double.select(listing, OPEN, [job], user=bob)) == nsfw_only(job)
    # Its buttons on messages in #general (as an earlier Atelier posted them) neither post its
    # pictures nor start jobs from them.
    assert atelier.bot is not None
    general = atelier.bot.get_channel(double.channel.id)
    assert isinstance(general, discord.TextChannel)
    kept = [double.message((await general.send(f"job `{job}`", view=view)).id)
            for view in (result_view(job, 2), single_image_view(job, 1))]
    for message in kept:
        for label in [label for row in message.button_labels for label in row
                      if label not in ("❤️", "🗑️")]:  # keeping and removing stay possible
            pressed = await double.click(message, button(message, label), user=bob)
            assert await refused(pressed) == nsfw_only(job), label
    assert public(atelier) == [grid, *kept]
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1

    # In an NSFW channel all of it works.
    recalled = await finished(await recall(atelier, job, user=bob, channel=double.nsfw_channel))
    assert recalled.channel_id == double.nsfw_channel.id
    single = await posted(await double.click(grid, button(grid, "U2"), user=bob))
    assert single.content.endswith(f"· job `{job}` · image 2")
    assert (pixels(single.attachment_bytes())
            == pixels(grid.attachment_bytes())[:, 128:]).all()


async def test_history_veils_nsfw_channel_pictures_outside_nsfw_channels(
        atelier: Atelier) -> None:
    double = atelier.double
    await seed_job(atelier, "after dark", 1, checkered=True, channel=double.nsfw_channel)

    def contrast(message: Message) -> float:
        return float(pixels(message.attachment_bytes())[BADGE:, BADGE:].std())

    assert contrast(await history(atelier, channel=double.nsfw_channel)) > 100  # the checkerboard
    assert contrast(await history(atelier)) < 30  # blurred beyond recognition


async def test_members_who_may_not_post_pictures_here_cannot_have_them_posted(
        atelier: Atelier) -> None:
    double = atelier.double
    bob = double.bob
    grid = await finished(await atelier.imagine("a red fox --seed 2", count=2))
    job = job_id_of(grid)
    listing = await history(atelier, by=bob)

    for denied in (Perm.SEND_MESSAGES, Perm.ATTACH_FILES):
        double.set_permission_overwrite(double.channel, bob, deny=denied)
        assert await refused(await double.click(grid, button(grid, "U1"), user=bob)) == (
            CANNOT_POST)
        assert await refused(await recall(atelier, job, user=bob)) == CANNOT_POST
        assert await refused(await double.select(listing, OPEN, [job], user=bob)) == CANNOT_POST
    assert public(atelier) == [grid]

    # Where he may post, and for others here, it works.
    elsewhere = await finished(await recall(atelier, job, user=bob, channel=double.nsfw_channel))
    single = await posted(await double.click(grid, button(grid, "U1"), user=double.alice))
    assert public(atelier) == [grid, elsewhere, single]


async def test_each_person_may_have_only_so_many_pictures_posted_a_minute(
        atelier: Atelier) -> None:
    double = atelier.double
    bob = double.bob
    limit = limits.PUBLIC_POSTS_PER_MINUTE
    grid = await finished(await atelier.imagine("a red fox --seed 2"))
    job = job_id_of(grid)
    listing = await history(atelier, by=bob)

    for n in range(limit - 2):
        await posted(await double.click(grid, button(grid, f"U{n % 4 + 1}"), user=bob))
    await finished(await recall(atelier, job, user=bob))
    await finished(await double.select(listing, OPEN, [job], user=bob))
    assert len([m for m in public(atelier) if m.id != grid.id]) == limit

    expected = (f"You had {limit} pictures posted in the last minute; wait a moment (at most "
                f"{limit} a minute per person).")
    assert await refused(await double.click(grid, button(grid, "U3"), user=bob)) == expected
    assert await refused(await recall(atelier, job, user=bob)) == expected
    assert await refused(await double.select(listing, OPEN, [job], user=bob)) == expected
    assert len(public(atelier)) == limit + 1
    # Others are not held back by Bob's posts.
    await posted(await double.click(grid, button(grid, "U3"), user=double.alice))


async def test_jobs_in_threads_are_seen_by_those_who_can_view_the_thread(
        atelier: Atelier) -> None:
    double = atelier.double
    alice, bob = double.alice, double.bob
    staff = await double.add_channel("staff", viewers=[alice])
    threads = {
        "open": await double.add_thread(double.channel, "ideas"),
        "private": await double.add_thread(double.channel, "plans", private=True),
        "staff": await double.add_thread(staff, "party"),
    }
    jobs = {name: await seed_job(atelier, f"a fox in the {name} thread", n, channel=thread)
            for n, (name, thread) in enumerate(threads.items())}

    def listed(message: Message) -> set[str]:
        return {job_id_of_line(line) for line in item_lines(message)}

    assert listed(await history(atelier, by=bob)) == {jobs["open"].id}
    assert listed(await history(atelier, by=alice)) == {job.id for job in jobs.values()}
    # The owner may manage threads, so sees the private one, not being in it.
    assert listed(await history(atelier, by=double.owner)) == {job.id for job in jobs.values()}
    for name in ("private", "staff"):
        assert await refused(await recall(atelier, jobs[name].id, user=bob)) == no_job(
            jobs[name].id)

    # In a thread, posting needs Send Messages in Threads, not Send Messages.
    ideas = threads["open"]
    double.set_permission_overwrite(double.channel, bob, deny=Perm.SEND_MESSAGES_IN_THREADS)
    refusal = await refused(await recall(atelier, jobs["open"].id, user=bob, channel=ideas))
    assert refusal == CANNOT_POST
    shown = await finished(await recall(atelier, jobs["open"].id, user=bob))
    assert shown.channel_id == double.channel.id
    double.set_permission_overwrite(double.channel, bob, deny=Perm.SEND_MESSAGES)
    shown = await finished(await recall(atelier, jobs["open"].id, user=bob, channel=ideas))
    assert shown.channel_id == ideas.id
