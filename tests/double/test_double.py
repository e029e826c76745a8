"""Self-tests: a small real discord.py bot driven through the Discord double."""

from __future__ import annotations

import asyncio
import io
import json
import time

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.double import DiscordDouble, discord_py_pointed_at, running_bot
from tests.double.server import GUILD_ID


def png_bytes(colour: str = "red", size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- the test bot


class AgainButton(discord.ui.DynamicItem[discord.ui.Button], template=r"again:(?P<n>\d+)"):
    """A persistent button that survives restarts: the number lives in the custom_id."""

    def __init__(self, n: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Again", emoji="🔁", style=discord.ButtonStyle.primary, custom_id=f"again:{n}"
            )
        )
        self.n = n

    @classmethod
    async def from_custom_id(cls, interaction, item, match):  # type: ignore[override]
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"again #{self.n}")


class ResultView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.add_item(AgainButton(7))

    @discord.ui.button(label="Upscale", custom_id="upscale", style=discord.ButtonStyle.secondary)
    async def upscale(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="upscaled", view=None)

    @discord.ui.select(
        custom_id="style",
        placeholder="Style",
        options=[discord.SelectOption(label="Oil", value="oil"), discord.SelectOption(label="Ink")],
    )
    async def style(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.defer()  # type 6: nothing visible changes yet
        await interaction.edit_original_response(content=f"style: {select.values[0]}")


class PromptModal(discord.ui.Modal, title="Describe it"):
    prompt = discord.ui.TextInput(label="Prompt", custom_id="prompt_text")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"modal said {self.prompt.value}", ephemeral=True)


class LabelModal(discord.ui.Modal, title="Labels"):
    """The label-wrapped modal layout (discord.py 2.6+), with a select inside."""

    name = discord.ui.Label(text="Name", component=discord.ui.TextInput(custom_id="name"))
    colour = discord.ui.Label(
        text="Colour",
        component=discord.ui.Select(
            custom_id="colour",
            options=[
                discord.SelectOption(label="Red", value="red"),
                discord.SelectOption(label="Blue"),
            ],
        ),
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        name = self.name.component.value  # type: ignore[attr-defined]
        colours = self.colour.component.values  # type: ignore[attr-defined]
        await interaction.response.send_message(f"{name} likes {colours}")


class CardLayout(discord.ui.LayoutView):
    """A components-v2 message: a container holding text and a button row."""

    def __init__(self) -> None:
        super().__init__(timeout=None)
        go = discord.ui.Button(label="Go", custom_id="card:go")
        go.callback = self.go  # type: ignore[method-assign]
        self.add_item(
            discord.ui.Container(discord.ui.TextDisplay("a card"), discord.ui.ActionRow(go))
        )

    async def go(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message("went")


def make_bot(gate: asyncio.Event | None = None) -> commands.Bot:
    """A bot exercising every interaction path the double supports."""
    bot = commands.Bot(
        command_prefix=commands.when_mentioned,
        intents=discord.Intents.default(),
        guild_ready_timeout=0.05,
    )
    seen: dict[str, object] = {}
    bot.seen = seen  # type: ignore[attr-defined]

    @app_commands.command(name="imagine", description="Make an image")
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        count: int = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        data = await image.read() if image is not None else png_bytes()
        seen["filesize_limit"] = interaction.filesize_limit
        await interaction.edit_original_response(
            content=f"{prompt} x{count}",
            attachments=[discord.File(io.BytesIO(data), filename="result.png")],
            view=ResultView(),
        )

    @app_commands.command(name="secret", description="Only you can see this")
    async def secret(interaction: discord.Interaction) -> None:
        seen["secret_in_dm"] = interaction.guild is None
        await interaction.response.send_message("only for you", ephemeral=True)

    jobs = ["fox in snow", "fox at night", "owl", "red panda"]

    @app_commands.command(name="recall", description="Find an old job")
    async def recall(interaction: discord.Interaction, job: str) -> None:
        await interaction.response.send_message(f"recalled {job}")

    @recall.autocomplete("job")
    async def recall_job(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=j, value=j) for j in jobs if current in j][:25]

    @app_commands.command(name="describe", description="Open a modal")
    async def describe(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal())

    @app_commands.context_menu(name="Image info")
    async def image_info(interaction: discord.Interaction, message: discord.Message) -> None:
        names = ", ".join(a.filename for a in message.attachments) or "no files"
        await interaction.response.send_message(f"{names} by {message.author.name}")

    @app_commands.command(name="batch", description="Deferred, then followups")
    async def batch(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.followup.send("first result")
        seen["original"] = await interaction.original_response()  # GET .../@original
        await interaction.followup.send("second result", ephemeral=True)

    @app_commands.command(name="slow", description="Finishes after its token expired")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        assert gate is not None
        await gate.wait()
        try:
            await interaction.edit_original_response(content="late result")
        except discord.HTTPException as error:
            seen["slow_error"] = (error.status, error.code)
            assert interaction.channel is not None
            await interaction.channel.send(f"{interaction.user.mention} late result")

    @app_commands.command(name="post", description="Post to the channel")
    async def post(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message("posting", ephemeral=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        msg = await interaction.channel.send(text, file=discord.File(io.BytesIO(b"a"), "a.txt"))
        seen["posted"] = msg.id

    @app_commands.command(name="modcheck", description="Guild-only permission check")
    async def modcheck(interaction: discord.Interaction) -> None:
        perms = interaction.permissions
        await interaction.response.send_message(f"manage_messages={perms.manage_messages}")

    @app_commands.command(name="extras", description="Less common paths")
    @app_commands.choices(
        what=[
            app_commands.Choice(name=n, value=n)
            for n in ("labels", "card", "dm", "channel", "gone", "withdraw")
        ]
    )
    async def extras(
        interaction: discord.Interaction, what: str, who: discord.Member | None = None
    ) -> None:
        if what == "labels":
            await interaction.response.send_modal(LabelModal())
        elif what == "gone":
            await interaction.response.send_message("about to vanish")
            await interaction.delete_original_response()
        elif what == "withdraw":
            await interaction.response.defer(thinking=True)
            await interaction.delete_original_response()
            await interaction.followup.send("privately, after all", ephemeral=True)
        elif what == "card":
            await interaction.response.send_message(view=CardLayout())
        elif what == "dm":
            assert who is not None
            try:
                await who.send("hello from the bot")
                await interaction.response.send_message("dm sent")
            except discord.HTTPException as error:
                await interaction.response.send_message(f"dm failed {error.code}")
        else:
            await interaction.response.defer(ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            try:
                msg = await interaction.channel.send(
                    "draft", file=discord.File(io.BytesIO(b"x"), "x.txt")
                )
                await msg.add_reaction("👍")
                await msg.edit(content="final", attachments=[])
                await interaction.followup.send("channel ok")
            except discord.HTTPException as error:
                await interaction.followup.send(f"channel failed {error.code}")

    @bot.event
    async def on_message(message: discord.Message) -> None:
        seen.setdefault("on_message", []).append(message.content)  # type: ignore[union-attr]

    async def setup_hook() -> None:
        bot.add_dynamic_items(AgainButton)
        commands_ = (imagine, secret, recall, describe, image_info, batch, slow, post, extras)
        for command in commands_:
            bot.tree.add_command(command)
        bot.tree.add_command(modcheck, guild=discord.Object(GUILD_ID))
        await bot.tree.sync()
        await bot.tree.sync(guild=discord.Object(GUILD_ID))

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


@pytest.fixture
async def bot_and_double(discord_double: DiscordDouble):
    bot = make_bot()
    async with running_bot(discord_double, bot, wait_for_commands=True):
        yield bot, discord_double


# --------------------------------------------------------------------------- tests


async def test_login_guilds_and_command_sync(bot_and_double) -> None:
    bot, double = bot_and_double
    assert bot.user is not None and bot.user.id == double.bot_user.id
    assert bot.application_id == double.application_id
    assert {g.id for g in bot.guilds} == {double.guild.id, double.other_guild.id}
    guild = bot.get_guild(double.guild.id)
    assert guild is not None and guild.name == "Atelier Test"
    nsfw = guild.get_channel(double.nsfw_channel.id)
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
    assert guild.get_channel(double.channel.id).is_nsfw() is False  # type: ignore[union-attr]

    names = {(c["name"], c["type"]) for c in double.commands}
    assert ("imagine", 1) in names and ("Image info", 3) in names
    assert all(
        c["id"] and c["application_id"] == str(double.application_id) for c in double.commands
    )
    imagine = next(c for c in double.commands if c["name"] == "imagine")
    assert [(o["name"], o["type"]) for o in imagine["options"]] == [
        ("prompt", 3),
        ("count", 4),
        ("image", 11),
    ]
    assert [c["name"] for c in double.guild_commands[double.guild.id]] == ["modcheck"]
    assert double.unhandled == []
    assert double.server_errors == []


async def test_defer_edit_with_attachment_view_and_update(bot_and_double) -> None:
    bot, double = bot_and_double
    upload = png_bytes("blue", (5, 4))
    h = await double.slash(
        "imagine",
        {"prompt": "a red fox", "count": 2},
        user=double.alice,
        channel=double.channel,
        attachments={"image": ("fox.png", upload, "image/png")},
    )
    response = await h.response()
    assert response.type == 5 and response.ephemeral is False
    assert h.ack_seconds is not None and 0 <= h.ack_seconds < 3

    msg = await h.original()
    assert msg.history[0]["loading"] is True
    await msg.wait_until(lambda m: not m.loading)
    assert msg.content == "a red fox x2"
    assert msg.interaction_user_id == double.alice.id and msg.type == 20
    assert [a.filename for a in msg.attachments] == ["result.png"]
    assert msg.attachment_bytes() == upload  # the bot re-downloaded the user's upload
    assert msg.attachments[0].content_type == "image/png"
    assert (msg.attachments[0].width, msg.attachments[0].height) == (5, 4)
    assert msg.button_labels == [["Upscale", "🔁 Again"]]
    assert msg.selects[0]["custom_id"] == "style"
    assert bot.seen["filesize_limit"] == 25 * 1024 * 1024  # type: ignore[attr-defined]

    # The bot-hosted attachment is downloadable, as from Discord's CDN.
    async with aiohttp.ClientSession() as session:
        async with session.get(msg.attachments[0].url) as resp:
            assert resp.status == 200 and await resp.read() == upload

    # Type 7: the button edits the message it sits on.
    click = await double.click(msg, "upscale", user=double.bob)
    assert (await click.response()).type == 7
    assert await click.original() is msg
    assert msg.content == "upscaled" and msg.components == []
    assert msg.attachments[0].filename == "result.png"  # an edit without files keeps them
    assert [s["content"] for s in msg.history] == ["", "a red fox x2", "upscaled"]
    with pytest.raises(LookupError):
        await double.click(msg, "upscale")  # the button is gone


async def test_select_defers_then_edits_component_message(bot_and_double) -> None:
    _, double = bot_and_double
    h = await double.slash("imagine", {"prompt": "owl"})
    msg = await h.original()
    await msg.wait_until(lambda m: not m.loading)
    sel = await double.select(msg, "style", ["oil"], user=double.bob)
    assert (await sel.response()).type == 6
    await msg.wait_until(lambda m: m.content == "style: oil")
    assert msg.edits == 2
    with pytest.raises(ValueError):
        await double.select(msg, "style", ["watercolour"])


async def test_dynamic_item_answers_with_new_message(bot_and_double) -> None:
    _, double = bot_and_double
    h = await double.slash("imagine", {"prompt": "owl"})
    msg = await h.original()
    await msg.wait_until(lambda m: not m.loading)
    again = await double.click(msg, "again:7", user=double.bob)
    answer = await again.original()
    assert (await again.response()).type == 4
    assert answer is not msg and answer.content == "again #7"
    assert answer.interaction_user_id == double.bob.id
    assert answer.interaction_metadata["interacted_message_id"] == str(msg.id)


async def test_ephemeral_and_dm(bot_and_double) -> None:
    bot, double = bot_and_double
    h = await double.slash("secret", user=double.bob)
    response = await h.response()
    assert response.type == 4 and response.ephemeral
    msg = await h.original()
    assert msg.ephemeral and msg.content == "only for you"

    dm = double.dm_channel(double.alice)
    h = await double.slash("secret", user=double.alice, channel=dm)
    assert (await h.original()).channel_id == dm.id
    assert "user" in h.payload and "member" not in h.payload and "guild_id" not in h.payload
    assert bot.seen["secret_in_dm"] is True  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        await double.slash("secret", user=double.bob, channel=dm)  # not bob's DM
    with pytest.raises(ValueError):
        await double.slash("secret", user=double.eve)  # eve is not in the guild


async def test_autocomplete(bot_and_double) -> None:
    _, double = bot_and_double
    choices = await double.autocomplete("recall", {"job": "fox"}, focused="job", user=double.alice)
    assert choices == [
        {"name": "fox in snow", "value": "fox in snow"},
        {"name": "fox at night", "value": "fox at night"},
    ]
    h = await double.slash("recall", {"job": "owl"})
    assert (await h.original()).content == "recalled owl"


async def test_modal(bot_and_double) -> None:
    _, double = bot_and_double
    h = await double.slash("describe", user=double.alice)
    response = await h.response()
    assert response.type == 9 and h.modal is not None
    assert h.modal["title"] == "Describe it"
    with pytest.raises(LookupError):
        await h.original()
    with pytest.raises(ValueError):
        await double.submit_modal(h.modal["custom_id"], {"nope": "x"})
    submitted = await double.submit_modal(h.modal["custom_id"], {"prompt_text": "a heron"})
    msg = await submitted.original()
    assert msg.content == "modal said a heron" and msg.ephemeral


async def test_context_menu_on_user_message(bot_and_double) -> None:
    _, double = bot_and_double
    posted = await double.post_message(
        double.channel, "look", user=double.bob, attachments=[("cat.png", png_bytes())]
    )
    h = await double.context_menu("Image info", target=posted, user=double.alice)
    msg = await h.original()
    assert msg.content == "cat.png by bob" and msg.type == 23


async def test_followups_fill_the_deferred_message_first(bot_and_double) -> None:
    bot, double = bot_and_double
    h = await double.slash("batch")
    original = await h.original()
    await double.wait_for(lambda: len(h.followups) == 2)
    first, second = h.followups
    # Discord turns the "thinking" placeholder into the first followup.
    assert first is original and first.content == "first result" and not first.loading
    assert second is not original and second.ephemeral and second.content == "second result"
    assert second.interaction_metadata["original_response_message_id"] == str(original.id)
    fetched = bot.seen["original"]  # type: ignore[attr-defined]
    assert fetched.id == original.id and fetched.content == "first result"

    h = await double.slash("extras", {"what": "gone"})
    gone = await h.original()
    await gone.wait_until(lambda m: m.deleted)
    assert gone.content == "about to vanish" and gone not in double.channel_messages(double.channel)


async def test_a_followup_after_the_placeholder_is_deleted_is_a_new_message(
        bot_and_double) -> None:
    _, double = bot_and_double
    h = await double.slash("extras", {"what": "withdraw"})
    placeholder = await h.original()
    await double.wait_for(lambda: h.followups)
    [answer] = h.followups
    assert placeholder.deleted and placeholder.loading and placeholder.content == ""
    assert answer is not placeholder and answer.ephemeral
    assert answer.content == "privately, after all"


async def test_expired_token_falls_back_to_channel_message(discord_double) -> None:
    double = discord_double
    gate = asyncio.Event()
    bot = make_bot(gate)
    async with running_bot(double, bot, wait_for_commands=True):
        h = await double.slash("slow", user=double.alice)
        placeholder = await h.original()
        double.expire(h)
        gate.set()
        late = await double.wait_for(
            lambda: [m for m in double.channel_messages(double.channel) if "late" in m.content]
        )
        assert late[0].content == f"<@{double.alice.id}> late result"
        assert late[0].mentioned_user_ids == [double.alice.id]
        assert placeholder.loading  # the deferred message never got its answer
        assert bot.seen["slow_error"] == (401, 50027)  # type: ignore[attr-defined]


async def test_channel_message_with_rate_limit_and_server_error(bot_and_double) -> None:
    bot, double = bot_and_double
    limited = double.fail("POST", r"^/channels/\d+/messages$", status=429, retry_after=0.2)
    h = await double.slash("post", {"text": "hello"})
    await double.wait_for(lambda: bot.seen.get("posted"))
    posted = double.message(bot.seen["posted"])
    assert posted.content == "hello" and posted.attachment_bytes() == b"a"
    assert limited.hits == 1
    statuses = [r.status for r in double.requests if r.method == "POST" and "/messages" in r.path]
    assert statuses == [429, 200]
    retry = [r.time for r in double.requests if r.method == "POST" and "/messages" in r.path]
    assert retry[1] - retry[0] >= 0.2
    assert (await h.response()).ephemeral

    double.fail("PATCH", r"/messages/@original$", status=500)
    h = await double.slash("imagine", {"prompt": "retry"})
    msg = await h.original()
    await msg.wait_until(lambda m: m.content == "retry x1", timeout=5)
    patches = [r.status for r in double.requests if r.method == "PATCH"]
    assert patches[-2:] == [500, 200]


async def test_upload_limit_and_validation_errors(bot_and_double) -> None:
    _, double = bot_and_double
    double.reject_uploads_over(10)
    h = await double.slash("imagine", {"prompt": "big"})
    await double.wait_for(lambda: any(r.status == 413 for r in double.requests))
    assert (await h.original()).loading

    # Direct REST checks: empty messages, bad tokens and unknown routes.
    headers = {"Authorization": f"Bot {double.token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        url = f"{double.api_base}/channels/{double.channel.id}/messages"
        async with session.post(url, data=json.dumps({"content": ""}), headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 50006
            assert resp.headers["Content-Type"] == "application/json"
        async with session.get(f"{double.api_base}/users/@me") as resp:
            assert resp.status == 401
        async with session.get(f"{double.api_base}/nope", headers=headers) as resp:
            assert resp.status == 404
            assert await resp.json() == {"message": "404: Not Found", "code": 0}
    assert double.unhandled == [("GET", "/nope")]


async def test_member_permissions(bot_and_double) -> None:
    _, double = bot_and_double
    h = await double.slash("modcheck", user=double.mod)
    assert (await h.original()).content == "manage_messages=True"
    assert h.payload["data"]["guild_id"] == str(double.guild.id)
    h = await double.slash("modcheck", user=double.bob)
    assert (await h.original()).content == "manage_messages=False"
    with pytest.raises(LookupError):
        await double.slash("modcheck", user=double.eve, channel=double.other_channel)


async def test_resume_replays_missed_events(bot_and_double) -> None:
    bot, double = bot_and_double
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    await double.disconnect_gateway()
    await double.wait_for(lambda: not double.gateway.connected)
    # Sent while the bot is cut off: delivered when it resumes.
    h = await double.slash("secret", user=double.alice)
    await asyncio.wait_for(resumed.wait(), 10)
    assert (await h.original()).content == "only for you"
    assert double.gateway.resume_count == 1 and double.gateway.ready_count == 1


async def test_state_survives_bot_restart(discord_double) -> None:
    double = discord_double
    started = time.monotonic()
    first = make_bot()
    async with running_bot(double, first, wait_for_commands=True):
        h = await double.slash("imagine", {"prompt": "persist"})
        msg = await h.original()
        await msg.wait_until(lambda m: not m.loading)
    assert not double.gateway.connected

    second = make_bot()
    async with running_bot(double, second):
        assert double.gateway.ready_count == 2
        # The dynamic button on the old message still works with the new process.
        again = await double.click(msg, "again:7")
        assert (await again.original()).content == "again #7"
    assert double.message(msg.id) is msg and double.sync_count >= 2
    assert time.monotonic() - started < 10


async def test_bad_token_is_rejected(discord_double) -> None:
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.none())
    with pytest.raises(discord.LoginFailure), discord_py_pointed_at(discord_double):
        await bot.login("not-the-token")
    await bot.close()


async def test_label_modal_and_components_v2(bot_and_double) -> None:
    _, double = bot_and_double
    h = await double.slash("extras", {"what": "labels"})
    await h.response()
    assert h.modal is not None and [c["type"] for c in h.modal["components"]] == [18, 18]
    submitted = await double.submit_modal(
        h.modal["custom_id"], {"name": "Ann", "colour": ["Blue"]}, user=double.bob
    )
    assert (await submitted.original()).content == "Ann likes ['Blue']"

    h = await double.slash("extras", {"what": "card"})
    card = await h.original()
    assert card.flags & (1 << 15) and card.content == ""
    assert card.button_labels == [["Go"]]
    went = await double.click(card, "card:go")
    assert (await went.original()).content == "went"
    with pytest.raises(ValueError):
        await double.slash("extras", {"what": "nothing"})  # not one of the choices


async def test_dm_channel_routes_and_permissions(bot_and_double) -> None:
    bot, double = bot_and_double
    h = await double.slash("extras", {"what": "dm", "who": double.bob})
    assert (await h.original()).content == "dm sent"
    dm = double.channel_messages(double.dm_channel(double.bob))
    assert [m.content for m in dm] == ["hello from the bot"]
    double.bob.dms_open = False
    h = await double.slash("extras", {"what": "dm", "who": double.bob})
    assert (await h.original()).content == "dm failed 50007"

    h = await double.slash("extras", {"what": "channel"})
    await double.wait_for(lambda: h.followups)
    assert h.followups[0].content == "channel ok" and h.followups[0].ephemeral
    posted = [m for m in double.channel_messages(double.channel) if m.content == "final"][0]
    assert posted.attachments == [] and posted.reactions == {"👍": {double.bot_user.id}}
    assert [s["attachments"] for s in posted.history] == [["x.txt"], []]

    double.set_permission_overwrite(
        double.channel, double.bot_user, deny=discord.Permissions(send_messages=True).value
    )
    h = await double.slash("extras", {"what": "channel"})
    await double.wait_for(lambda: h.followups)
    assert h.followups[0].content == "channel failed 50013"

    # Without the message content intent, other users' posts arrive blank.
    await double.post_message(double.channel, "hello bot", user=double.bob)
    await double.post_message(double.channel, f"hi {double.bot_user.mention}", user=double.bob)
    await double.wait_for(lambda: len(bot.seen.get("on_message", [])) == 2)
    assert bot.seen["on_message"] == ["", f"hi <@{double.bot_user.id}>"]


async def test_stalled_callback_shows_in_ack_time(bot_and_double) -> None:
    _, double = bot_and_double
    stall = double.fail("POST", r"/callback$", status=None, delay=0.3)
    h = await double.slash("secret")
    await h.original()
    assert stall.hits == 1 and h.ack_seconds is not None and h.ack_seconds < 0.3
    # The stall happens inside the request: the bot waited, the ack arrived on time.
    assert [r for r in double.requests if r.path.endswith("/callback")][-1].status == 200


async def test_a_held_request_waits_until_released(bot_and_double) -> None:
    _, double = bot_and_double
    held = double.fail("POST", r"/callback$", status=None, hold=True)
    h = await double.slash("secret")
    await double.wait_for(lambda: held.hits == 1)
    await asyncio.sleep(0.2)  # held however long it takes
    assert not h.acknowledged
    held.release()
    await h.original()
    assert h.acknowledged


async def test_private_channels_are_created_seen_and_deleted(bot_and_double) -> None:
    bot, double = bot_and_double
    staff = await double.add_channel("staff", viewers=[double.alice])
    cached = await double.wait_for(lambda: bot.get_channel(staff.id))
    guild = cached.guild
    assert isinstance(cached, discord.TextChannel) and cached.name == "staff"
    assert not cached.permissions_for(guild.default_role).view_channel
    assert cached.overwrites_for(discord.Object(double.alice.id)).view_channel is True
    assert cached.overwrites_for(discord.Object(double.bot_user.id)).view_channel is True

    # Discord offers nothing of a channel to a member who cannot view it.
    with pytest.raises(ValueError, match="cannot view"):
        await double.slash("secret", user=double.bob, channel=staff)
    answered = await double.slash("secret", user=double.alice, channel=staff)
    assert (await answered.original()).content == "only for you"
    member = answered.payload["member"]
    assert int(member["permissions"]) & discord.Permissions(view_channel=True).value

    nsfw = await double.add_channel("after-dark", nsfw=True)
    assert (await double.wait_for(lambda: bot.get_channel(nsfw.id))).is_nsfw()

    await double.delete_channel(staff)
    await double.wait_for(lambda: bot.get_channel(staff.id) is None)
    assert staff.id not in double.channels
    assert double.server_errors == []


async def test_threads_follow_their_parent_channel(bot_and_double) -> None:
    bot, double = bot_and_double
    ideas = await double.add_thread(double.channel, "ideas")
    guild = bot.get_guild(double.guild.id)
    cached = await double.wait_for(lambda: guild.get_thread(ideas.id))
    assert isinstance(cached, discord.Thread) and cached.parent_id == double.channel.id
    assert cached.permissions_for(guild.default_role).view_channel
    answered = await double.slash("secret", user=double.bob, channel=ideas)
    assert (await answered.original()).channel_id == ideas.id

    plans = await double.add_thread(double.channel, "plans", private=True)
    cached = await double.wait_for(lambda: guild.get_thread(plans.id))
    assert cached.type is discord.ChannelType.private_thread
    # Its members and those who may manage threads see it; nobody else.
    with pytest.raises(ValueError, match="cannot view"):
        await double.slash("secret", user=double.bob, channel=plans)
    for user in (double.alice, double.owner):
        answered = await double.slash("secret", user=user, channel=plans)
        assert (await answered.original()).content == "only for you"
    assert double.server_errors == []
async def test_mentions_notify_when_a_message_is_created_not_when_edited(bot_and_double) -> None:
    bot, double = bot_and_double
    channel = bot.get_partial_messageable(double.channel.id, guild_id=double.guild.id)
    alice = discord.Object(double.alice.id)
    quiet = await channel.send(f"<@{alice.id}> waiting",
                               allowed_mentions=discord.AllowedMentions.none())
    await quiet.edit(content=f"<@{alice.id}> done", allowed_mentions=discord.AllowedMentions(
        users=[alice]))
    loud = await channel.send(f"<@{alice.id}> done",
                              allowed_mentions=discord.AllowedMentions(users=[alice]))
    stored_quiet, stored_loud = double.message(quiet.id), double.message(loud.id)
    assert stored_quiet.mentioned_user_ids == stored_loud.mentioned_user_ids == [alice.id]
    assert stored_quiet.pinged_user_ids == [] and stored_loud.pinged_user_ids == [alice.id]


async def test_a_repeated_nonce_returns_the_first_message(bot_and_double) -> None:
    bot, double = bot_and_double
    channel = bot.get_partial_messageable(double.channel.id, guild_id=double.guild.id)
    first = await channel.send("once", nonce="job-1-result")
    again = await channel.send("once more", nonce="job-1-result")
    other = await channel.send("other", nonce="job-2-result")
    assert again.id == first.id and other.id != first.id
    assert [m.content for m in double.channel_messages(double.channel)] == ["once", "other"]
    await first.delete()
    with pytest.raises(discord.NotFound):
        await channel.send("after deleting", nonce="job-1-result")
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x", nonce="n" * 26)
    assert too_long.value.status == 400


async def test_a_late_answer_comes_after_the_work_is_done(bot_and_double) -> None:
    bot, double = bot_and_double
    channel = bot.get_partial_messageable(double.channel.id, guild_id=double.guild.id)
    late = double.fail("POST", r"^/channels/\d+/messages$", status=None, delay=5,
                       late_answer=True)
    sending = asyncio.ensure_future(channel.send("made, unanswered"))
    [made] = await double.wait_for(lambda: double.channel_messages(double.channel), 3)
    assert made.content == "made, unanswered" and not sending.done() and late.hits == 1
    sending.cancel()  # a client that stops waiting never learns the message's id


async def test_a_deleted_channel_is_unknown(bot_and_double) -> None:
    bot, double = bot_and_double
    channel = bot.get_partial_messageable(double.channel.id, guild_id=double.guild.id)
    before = await channel.send("before")
    await double.delete_channel(double.channel)
    with pytest.raises(discord.NotFound) as gone:
        await channel.send("after")
    assert (gone.value.status, gone.value.code, gone.value.text) == (404, 10003,
                                                                       "Unknown Channel")
    with pytest.raises(discord.NotFound):
        await before.edit(content="edited")
    assert double.message(before.id).deleted
    await double.wait_for(lambda: bot.get_channel(double.channel.id) is None, 5)
