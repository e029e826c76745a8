"""Where the bot may not post pictures, a job is refused before it is queued, naming what the bot
lacks in the channel: nothing is accepted that could not be delivered (issue: the newcomer's
first ten minutes)."""

from __future__ import annotations

import discord
import pytest

from tests.e2e.conftest import Atelier, button, finished, job_id_of, posted, rows

pytestmark = pytest.mark.e2e

LACKS_FILES = ("Atelier cannot post pictures here: it lacks Attach Files in this channel. A "
               "server admin can grant them (Edit Channel → Permissions).")


async def test_imagine_buttons_and_recall_are_refused_where_the_bot_cannot_post(
        atelier: Atelier) -> None:
    double = atelier.double
    grid = await finished(await atelier.imagine("a red fox --seed 1", count=1))
    single = await posted(await double.click(grid, button(grid, "U1")))
    assert single.attachments

    double.set_permission_overwrite(double.channel, double.bot_user,
                                    deny=discord.Permissions(attach_files=True).value)
    await double.wait_for(lambda: atelier.bot is not None and not atelier.bot.get_channel(
        double.channel.id).permissions_for(atelier.bot.get_guild(double.guild.id).me)
        .attach_files, 10)

    refused = await (await atelier.imagine("a blue fox")).response()
    assert refused.ephemeral and refused.data["content"] == LACKS_FILES
    for label in ("🔄", "V1", "U1"):
        answer = await (await double.click(grid, button(grid, label))).response()
        assert answer.ephemeral and answer.data["content"] == LACKS_FILES, label
    for label in ("Zoom Out 2x", "Vary (Subtle)"):
        answer = await (await double.click(single, button(single, label))).response()
        assert answer.ephemeral and answer.data["content"] == LACKS_FILES, label
    recalled = await (await double.slash("recall", {"job": job_id_of(grid)},
                                         user=double.bob)).response()
    assert recalled.ephemeral and recalled.data["content"] == LACKS_FILES
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1  # nothing was queued

    # ephemeral answers need nothing of the channel: /info and /history still work
    info = await (await double.slash("info", user=double.alice)).response()
    assert info.ephemeral and info.data["embeds"]

    # in another channel, where it may post, everything works
    elsewhere = await finished(await double.slash("imagine", {"prompt": "a green fox"},
                                                  user=double.alice, channel=double.nsfw_channel))
    assert elsewhere.attachments
