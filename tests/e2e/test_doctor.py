"""`python -m bot doctor` as a process against the Discord double (and a hub double): a table
with one line per check, ✅/⚠️/❌ and what to do, the invite link, exit status 1 on ❌."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from storage.database import migrations
from tests.double import DiscordDouble, Perm
from tests.double.hub import HubDouble
from tests.e2e.conftest import Atelier, bot_env
from tests.e2e.processes import INVITE, free_port, run_atelier, table
from tests.e2e.test_first_run import bot_role

pytestmark = pytest.mark.e2e

TOKEN_REFUSED = ("Discord refused DISCORD_TOKEN — reset it under Bot in the Developer Portal "
                 "and put the new one in .env")
NOT_REGISTERED = "commands not registered yet: the bot registers them as it starts"
NO_INVITE = "Invite link: needs a token Discord accepts (the link holds the application's id)"


async def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = await run_atelier("doctor", env=env, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def test_a_working_set_up_is_all_green_and_the_doctor_leaves_the_bot_alone(
        atelier: Atelier, discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    """Beside the running bot, as an operator runs it: commands registered, permissions ok,
    the database at the latest migration, and no gateway session of its own."""
    sessions = discord_double.gateway.ready_count
    result = await doctor(bot_env(discord_double, data_dir, SD_DEVICE="cpu"), tmp_path)
    assert result.returncode == 0, result.stdout
    rows = table(result.stdout)
    latest = migrations()[-1][0]
    commands = len([command for command in discord_double.commands if command["type"] == 1])
    assert rows["configuration"] == ("✅", "read from the environment (no .env here)")
    assert rows["data folder"][0] == "✅"
    assert rows["data folder"][1].startswith(f"DATA_DIR={data_dir}: writable, ")
    assert rows["database"] == (
        "✅", f"{data_dir / 'atelier.db'}: quick check ok, migration {latest} (the latest), 0 jobs")
    assert rows["torch"][0] == "✅" and rows["torch"][1].startswith(f"torch {torch.__version__} (")
    assert rows["device"] == ("✅", "cpu, float32 (SD_DEVICE=cpu)")
    assert rows["default model"] == (
        "✅", "SD_MODEL=tiny: made here, a small random model for tests")
    assert rows["LoRAs"] == ("✅", "LORA_DIR is not set: no LoRAs")
    assert rows["Discord"] == ("✅", "DISCORD_TOKEN accepted: bot Atelier (1250000000000000002), "
                                     "application 1250000000000000001")
    assert rows["gateway"] == ("✅", f"{discord_double.gateway_url.rstrip('/')} answers")
    assert rows["server Atelier Test"] == (
        "✅", f"{commands} commands registered; permissions ok in 2 channels")
    assert rows["server Elsewhere"] == (
        "✅", f"{commands} commands registered; permissions ok in 1 channel")
    assert result.stdout.splitlines()[-2:] == [f"  {INVITE}", "All good."]
    assert discord_double.gateway.ready_count == sessions
    # The bot still answers.
    assert discord_double.gateway.connected


async def test_what_this_machine_lacks_is_one_line_each(
        discord_double: DiscordDouble, tmp_path: Path) -> None:
    blocker = tmp_path / "storage"
    blocker.write_text("a file where a folder was meant to be")
    env = bot_env(discord_double, blocker / "atelier", DISCORD_TOKEN="MTIz.reset.since-then",
                  SD_MODEL="/models/realvis", SD_MODELS="xl=someone/never-downloaded",
                  LORA_DIR=str(tmp_path / "loras"))
    result = await doctor(env, tmp_path)
    assert result.returncode == 1, result.stdout
    rows = table(result.stdout)
    assert rows["data folder"] == (
        "❌", f"DATA_DIR={blocker / 'atelier'} cannot be used: {blocker} is a file, not a folder; "
              "set DATA_DIR to a folder this user can write")
    assert rows["default model"] == ("❌", "SD_MODEL=/models/realvis: there is no such folder or "
                                           "file")
    assert rows["model xl"] == (
        "❌", "xl=someone/never-downloaded in SD_MODELS: not downloaded yet, and HF_HUB_OFFLINE=1 "
              "keeps it from being downloaded: unset it for the first start, or point SD_MODELS "
              "at a local folder or file")
    assert rows["LoRAs"] == ("❌", f"LORA_DIR={tmp_path / 'loras'} is not a folder: make it, or "
                                   "unset LORA_DIR")
    assert rows["Discord"] == ("❌", TOKEN_REFUSED)
    assert "gateway" not in rows and not any(topic.startswith("server") for topic in rows)
    assert NO_INVITE in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1].endswith(": fix the ❌ lines, then run this again.")
    assert "since-then" not in result.stdout + result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine can use CUDA")
async def test_sd_device_cuda_without_cuda(discord_double: DiscordDouble, data_dir: Path,
                                           tmp_path: Path) -> None:
    result = await doctor(bot_env(discord_double, data_dir, SD_DEVICE="cuda"), tmp_path)
    assert result.returncode == 1, result.stdout
    mark, text = table(result.stdout)["device"]
    assert mark == "❌"
    assert text.startswith("SD_DEVICE=cuda, but CUDA is not usable here: torch "
                           f"{torch.__version__} ")


async def test_without_a_network_discord_and_the_hub_cannot_be_reached(
        data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    double = DiscordDouble(port=port)  # never started: nothing listens there
    env = bot_env(double, data_dir, SD_MODEL="someone/model", HF_HUB_OFFLINE="0",
                  HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    result = await doctor(env, tmp_path)
    assert result.returncode == 1, result.stdout
    rows = table(result.stdout)
    mark, text = rows["Discord"]
    assert mark == "❌"
    assert text.startswith(f"Discord is not reachable at http://127.0.0.1:{port}/api/v10 (Cannot "
                           f"connect to host 127.0.0.1:{port} "), text
    assert text.endswith("): check this machine's internet connection, DNS and firewall")
    # The hub may only be out of reach for now: a warning, the start says more.
    mark, text = rows["default model"]
    assert mark == "⚠️"
    assert text.startswith("SD_MODEL=someone/model: not downloaded yet, and the Hugging Face hub "
                           "cannot be reached (")
    assert NO_INVITE in result.stdout.splitlines()


async def test_an_unreachable_gateway(discord_double: DiscordDouble, data_dir: Path,
                                      tmp_path: Path) -> None:
    port = free_port()
    env = bot_env(discord_double, data_dir, DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{port}/")
    result = await doctor(env, tmp_path)
    assert result.returncode == 1, result.stdout
    rows = table(result.stdout)
    assert rows["Discord"][0] == "✅"
    mark, text = rows["gateway"]
    assert mark == "❌"
    assert text.startswith(f"Discord's gateway ws://127.0.0.1:{port} is not reachable (Cannot "
                           f"connect to host 127.0.0.1:{port} "), text
    assert text.endswith("): check this machine's firewall and proxy")
    assert f"  {INVITE}" in result.stdout.splitlines()


async def test_servers_the_bot_cannot_serve(discord_double: DiscordDouble, data_dir: Path,
                                            tmp_path: Path) -> None:
    """A channel where it may not attach files (a warning, or ❌ where ALLOWED_CHANNELS sends
    people), a server it was invited to without the commands scope, a DEV_GUILD_ID it is not
    in, a damaged database."""
    discord_double.set_permission_overwrite(discord_double.channel, bot_role(discord_double),
                                            deny=Perm.ATTACH_FILES)
    discord_double.other_guild.commands_scope = False
    data_dir.joinpath("atelier.db").write_bytes(b"not a database, whatever its name " * 200)
    result = await doctor(bot_env(discord_double, data_dir), tmp_path)
    assert result.returncode == 1, result.stdout
    rows = table(result.stdout)
    assert rows["server Atelier Test"] == (
        "⚠️", f"{NOT_REGISTERED}; #general lacks Attach Files: grant these to the bot's role in "
              "each channel's settings (ok in 1 other channel)")
    assert rows["server Elsewhere"] == (
        "❌", "the bot was invited without the applications.commands scope, so its commands do "
              "not show here: open the invite link below and pick this server again; "
              "permissions ok in 1 channel")
    assert rows["database"] == (
        "❌", f"{data_dir / 'atelier.db'} cannot be read as a database (file is not a database): "
              "restore a backup, or move it away to start with an empty history")

    discord_double.other_guild.commands_scope = True
    data_dir.joinpath("atelier.db").unlink()
    env = bot_env(discord_double, data_dir, ALLOWED_CHANNELS=str(discord_double.channel.id),
                  DEV_GUILD_ID="1250000000000009999")
    result = await doctor(env, tmp_path)
    assert result.returncode == 1, result.stdout
    rows = table(result.stdout)
    assert rows["server Atelier Test"] == (
        "❌", "no commands here: DEV_GUILD_ID=1250000000000009999 registers them in that server "
              "only; #general lacks Attach Files: grant these to the bot's role in each "
              "channel's settings (no allowed channel where it can post results yet)")
    assert rows["servers"] == (
        "❌", "DEV_GUILD_ID=1250000000000009999: the bot is not in that server: invite it there "
              "with the link below, or unset DEV_GUILD_ID")


async def test_a_bot_in_no_server_is_told_to_use_the_invite_link(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    for guild in list(discord_double.guilds.values()):
        discord_double.leave(guild, discord_double.bot_user)
    result = await doctor(bot_env(discord_double, data_dir, SD_DEVICE="cpu"), tmp_path)
    assert result.returncode == 0, result.stdout
    assert table(result.stdout)["servers"] == (
        "⚠️", "the bot is in no server yet: open the invite link below and pick one")
    lines = result.stdout.splitlines()
    assert lines[-3:] == [
        "Invite link (scopes bot and applications.commands; View Channel, Send Messages, Embed "
        "Links, Attach Files, Read Message History):", f"  {INVITE}",
        "Nothing stops Atelier; 1 ⚠️ to look at."]


async def test_models_are_checked_against_the_cache_and_the_hub(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path, hub_cache: Path) -> None:
    """A model downloaded before; one on the hub, with the size of what loading it fetches (one
    format of each component's weights); a misspelt id; a repo that is no diffusers model."""
    hub = await HubDouble({
        "someone/sd-base": {
            "model_index.json": 600,
            "v1-5-pruned.safetensors": 7_703_807_346,  # the single file: not loaded from here
            "unet/config.json": 1_000,
            "unet/diffusion_pytorch_model.safetensors": 3_438_167_536,
            "unet/diffusion_pytorch_model.fp16.safetensors": 1_719_125_304,
            "unet/diffusion_pytorch_model.bin": 3_438_354_725,
            "text_encoder/config.json": 600,
            "text_encoder/model.safetensors": 492_265_168,
            "text_encoder/model.fp16.safetensors": 246_144_152,
            "vae/config.json": 600,
            "vae/diffusion_pytorch_model.safetensors": 334_643_268,
            "vae/diffusion_pytorch_model.fp16.safetensors": 167_335_342,
            "tokenizer/vocab.json": 1_059_962,
            "tokenizer/merges.txt": 524_619,
        },
        "someone/a-lora": {"pytorch_lora_weights.safetensors": 3_200_000},
    }).start()
    try:
        env = bot_env(discord_double, data_dir, HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.endpoint,
                      SD_DEVICE="cpu", SD_MODEL="stable-diffusion-v1-5/stable-diffusion-v1-5",
                      SD_MODELS="base=someone/sd-base,typo=someone/sd-bsae,lora=someone/a-lora")
        result = await doctor(env, tmp_path)
    finally:
        await hub.close()
    assert result.returncode == 1, result.stdout
    rows = table(result.stdout)
    mark, text = rows["default model"]
    assert mark == "✅"
    assert text.startswith("SD_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5: downloaded, "
                           "tiny (random, for tests), "), text
    # float32 on the CPU: the full weights of unet, text_encoder and vae, and the small files.
    assert rows["model base"] == ("✅", "base=someone/sd-base in SD_MODELS: not downloaded yet, "
                                        "about 4.3 GB to download at the first start")
    assert rows["model typo"] == (
        "❌", "typo=someone/sd-bsae in SD_MODELS: no such folder here, and no such model on the "
              "Hugging Face hub: check the spelling (owner/name, as in "
              "https://huggingface.co/someone/sd-bsae)")
    assert rows["model lora"] == ("❌", "lora=someone/a-lora in SD_MODELS: on the Hugging Face "
                                        "hub, but not a diffusers pipeline (it has no "
                                        "model_index.json)")
    assert sorted(hub.asked) == ["someone/a-lora", "someone/sd-base", "someone/sd-bsae"]


async def test_a_malformed_setting_is_the_only_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=abc\nMAX_BATCH=lots\n")
    result = await doctor(bot_env(), tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "❌ configuration          MAX_BATCH must be a whole number ≥ 1, got 'lots'",
        "1 ❌ and 0 ⚠️: fix the ❌ lines, then run this again."]


async def test_discord_failing_midway_is_a_line_not_a_traceback(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    discord_double.fail("GET", r"^/users/@me/guilds", status=403, times=None,
                        body={"message": "Missing Access", "code": 50001})
    result = await doctor(bot_env(discord_double, data_dir), tmp_path)
    assert result.returncode == 1, result.stdout
    assert table(result.stdout)["servers"] == (
        "❌", "Discord failed to list the bot's servers and commands (403 Missing Access): run "
              "this again in a while")
    assert f"  {INVITE}" in result.stdout.splitlines()
