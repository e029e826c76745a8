"""A newcomer's first `python -m bot`: each thing a team meets first stops the start with one
line that says what to do (no traceback, exit status 2), or, for a Discord that cannot be
reached, is waited for and said so once per attempt; the invite link when the bot is in no
server yet; a warning for channels it cannot post in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.double import DiscordDouble, Perm, Role
from tests.double.hub import HubDouble
from tests.e2e.conftest import bot_env
from tests.e2e.processes import INVITE, Running, free_port, last_line, run_atelier

pytestmark = pytest.mark.e2e

TOKEN_REFUSED = ("atelier: Discord refused DISCORD_TOKEN — reset it under Bot in the Developer "
                 "Portal and put the new one in .env")


def bot_role(double: DiscordDouble) -> Role:
    return next(role for role in double.guild.roles if role.bot_id == double.bot_user.id)


async def test_a_token_discord_refuses_is_one_line_and_nothing_starts(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    env = bot_env(discord_double, data_dir, DISCORD_TOKEN="MTIzNDU2.reset.since-then")
    result = await run_atelier(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert last_line(result) == TOKEN_REFUSED
    assert "Traceback" not in result.stderr and "since-then" not in result.stderr
    assert [r.status for r in discord_double.requests if r.path == "/users/@me"] == [401]
    assert not (data_dir / "atelier.db").exists()  # refused before anything was set up
    # The whole story is in the log at DEBUG, the token still hidden.
    debug = await run_atelier(env={**env, "LOG_LEVEL": "DEBUG"}, cwd=tmp_path)
    assert debug.returncode == 2 and last_line(debug) == TOKEN_REFUSED
    assert "Traceback" in debug.stderr and "LoginFailure" in debug.stderr
    assert "since-then" not in debug.stderr


async def test_discord_unreachable_is_retried_with_backoff_until_it_answers(
        data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    double = DiscordDouble(port=port)  # started later: until then nothing listens there
    bot = await Running.start(bot_env(double, data_dir), tmp_path)
    try:
        first = await bot.line("Discord is not reachable")
        assert (f"WARNING bot.startup: Discord is not reachable (Cannot connect to host "
                f"127.0.0.1:{port} ") in first, bot.output
        assert first.endswith("; trying again in 1 s")
        await bot.line(lambda line: "not reachable" in line and line.endswith("again in 2 s"))
        await double.start()
        await double.wait_ready(60)
        await double.wait_for_commands(60)
    finally:
        code = await bot.stop()
        await double.close()
    assert code == 0, bot.output
    assert "Traceback" not in bot.output


async def test_an_unreachable_gateway_is_waited_for_and_sigterm_still_stops(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = bot_env(discord_double, data_dir, DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/")
    bot = await Running.start(env, tmp_path)
    try:
        first = await bot.line("gateway is not reachable")
        assert (f"WARNING bot.startup: Discord's gateway is not reachable (Cannot connect to "
                f"host 127.0.0.1:{port} ") in first, bot.output
        assert first.endswith("; trying again in 1 s")
        await bot.line(lambda line: "not reachable" in line and line.endswith("again in 2 s"))
    finally:
        code = await bot.stop()
    assert code == 0, bot.output
    assert "SIGTERM: stopping" in bot.output and "Traceback" not in bot.output
    assert discord_double.gateway.ready_count == 0


@pytest.mark.parametrize(("settings", "said"), [
    ({"SD_MODEL": "/models/realvis"}, "SD_MODEL=/models/realvis: there is no such folder or file"),
    ({"SD_MODELS": "anime=~/models/waifu.safetensors"},
     "anime=~/models/waifu.safetensors in SD_MODELS: there is no such folder or file"),
    ({"SD_MODEL": "someone/never-downloaded"},
     "SD_MODEL=someone/never-downloaded: not downloaded yet, and HF_HUB_OFFLINE=1 keeps it from "
     "being downloaded: unset it for the first start, or point SD_MODEL at a local folder or "
     "file"),
    ({"SD_MODEL": "stabilityai/stable-difusion-xl-base-1.0", "HF_HUB_OFFLINE": "0"},
     "SD_MODEL=stabilityai/stable-difusion-xl-base-1.0: no such folder here, and no such model "
     "on the Hugging Face hub: check the spelling (owner/name, as in "
     "https://huggingface.co/stabilityai/stable-difusion-xl-base-1.0)"),
], ids=["missing-folder", "missing-file", "offline", "misspelt-hub-id"])
async def test_a_model_that_cannot_be_found_names_the_setting_and_the_value(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path,
        settings: dict[str, str], said: str) -> None:
    hub = await HubDouble().start()
    try:
        env = bot_env(discord_double, data_dir, HF_ENDPOINT=hub.endpoint, **settings)
        result = await run_atelier(env=env, cwd=tmp_path)
    finally:
        await hub.close()
    assert result.returncode == 2, result.stderr
    assert last_line(result) == f"atelier: {said}"
    assert "Traceback" not in result.stderr
    assert not discord_double.requests  # it stopped before talking to Discord


async def test_a_hub_that_cannot_be_reached_for_a_model_not_downloaded(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    env = bot_env(discord_double, data_dir, SD_MODEL="someone/model", HF_HUB_OFFLINE="0",
                  HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    result = await run_atelier(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = last_line(result)
    assert line.startswith("atelier: SD_MODEL=someone/model: not downloaded yet, and the Hugging "
                           "Face hub cannot be reached ("), line
    assert line.endswith("): connect this machine to the internet for the first start, or point "
                         "SD_MODEL at a local folder or file")
    assert "Traceback" not in result.stderr


async def test_a_data_dir_that_cannot_be_made_is_one_line(
        discord_double: DiscordDouble, tmp_path: Path) -> None:
    blocker = tmp_path / "storage"
    blocker.write_text("a file where a folder was meant to be")
    env = bot_env(discord_double, blocker / "atelier")
    result = await run_atelier(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert last_line(result) == (f"atelier: DATA_DIR={blocker / 'atelier'} cannot be used: "
                                 f"{blocker} is a file, not a folder; set DATA_DIR to a folder "
                                 "this user can write")
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any folder")
async def test_a_data_dir_this_user_cannot_write_is_one_line(
        discord_double: DiscordDouble, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o555)
    result = await run_atelier(env=bot_env(discord_double, folder), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert last_line(result) == (f"atelier: DATA_DIR={folder} is not writable (Permission "
                                 "denied): make it writable by this user (chown, chmod), or set "
                                 "DATA_DIR to a folder this user can write")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine can use CUDA")
async def test_sd_device_cuda_without_cuda_is_one_line(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    env = bot_env(discord_double, data_dir, SD_DEVICE="cuda")
    result = await run_atelier(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = last_line(result)
    assert line.startswith("atelier: SD_DEVICE=cuda, but CUDA is not usable here: torch "
                           f"{torch.__version__} "), line
    assert line.endswith("; or set SD_DEVICE=auto to use what there is")
    assert "Traceback" not in result.stderr and not discord_double.requests


async def test_dev_guild_without_the_commands_scope_is_one_line_with_the_invite_link(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    discord_double.guild.commands_scope = False  # invited with `bot` alone
    env = bot_env(discord_double, data_dir, DEV_GUILD_ID=str(discord_double.guild.id))
    result = await run_atelier(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert last_line(result) == (
        f"atelier: Discord refused the commands for DEV_GUILD_ID={discord_double.guild.id} "
        "(Missing Access): the bot must be in that server, invited with the "
        f"applications.commands scope: {INVITE}")
    assert "Traceback" not in result.stderr


async def test_a_bot_in_no_server_prints_its_invite_link(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    for guild in list(discord_double.guilds.values()):
        discord_double.leave(guild, discord_double.bot_user)
    bot = await Running.start(bot_env(discord_double, data_dir), tmp_path)
    try:
        line = await bot.line("no server yet")
    finally:
        code = await bot.stop()
    assert line.endswith("WARNING bot.client: Atelier is in no server yet: open this link to "
                         f"add it to one: {INVITE}"), bot.output
    assert code == 0


async def test_channels_the_bot_cannot_post_in_are_named_at_start(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    discord_double.set_permission_overwrite(discord_double.channel, bot_role(discord_double),
                                            deny=Perm.ATTACH_FILES)
    bot = await Running.start(bot_env(discord_double, data_dir), tmp_path)
    try:
        await discord_double.wait_ready(120)
        line = await bot.line("server Atelier Test:")
    finally:
        code = await bot.stop()
    assert line.endswith("WARNING bot.client: server Atelier Test: #general lacks Attach Files: "
                         "grant these to the bot's role in each channel's settings (ok in 1 other "
                         "channel)"), bot.output
    assert "server Elsewhere" not in bot.output  # nothing lacks there
    assert code == 0


async def test_a_dropped_gateway_connection_is_one_line_and_the_bot_reconnects(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    bot = await Running.start(bot_env(discord_double, data_dir), tmp_path)
    try:
        await discord_double.wait_ready(120)
        await bot.line("ready as")
        # Cut off, and turned away when it comes back: discord.py logs each failed reconnect
        # with a traceback.
        discord_double.gateway.refusing = True
        await discord_double.disconnect_gateway(4000)
        line = await bot.line("lost the connection to Discord")
        discord_double.gateway.refusing = False
        await discord_double.wait_for(lambda: discord_double.gateway.resume_count
                                      or discord_double.gateway.ready_count > 1, 60)
    finally:
        code = await bot.stop()
    assert "WARNING discord.client: lost the connection to Discord (" in line, bot.output
    assert line.endswith(" s") and "; reconnecting in " in line
    assert "Traceback" not in bot.output and code == 0
