"""`python -m bot doctor`: everything Atelier needs, checked and printed as a table, one line
each with ✅, ⚠️ or ❌ and what to do, then the invite link; the exit status is 1 when a line
is ❌. The checks of this machine are `bot.checks`'; here are Discord's (the token, the gateway,
each server's commands and the bot's permissions in its channels), read over REST: the doctor
never opens a gateway session, so it may run beside the bot."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import discord

from bot import checks
from bot.checks import Finding, Mark
from bot.config import Settings
from bot.permissions import NEEDED, invite_url, labels, server_report
from bot.startup import TOKEN_REFUSED, UNREACHABLE, gateway_hello, reason

TOPIC_WIDTH = 22
DISCORD_TIMEOUT = 60.0  # seconds for all of Discord's checks together
MAX_SERVERS = 25  # servers checked one by one; more are counted


class Report:
    """The table, printed line by line as the checks finish (some take seconds)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.marks: list[Mark] = []

    def __call__(self, finding: Finding) -> None:
        topic = finding.topic
        if len(topic) > TOPIC_WIDTH:
            topic = topic[:TOPIC_WIDTH - 1] + "…"
        print(f"{finding.mark.value} {topic:<{TOPIC_WIDTH}} {finding.text}", file=self.out,
              flush=True)
        self.marks.append(finding.mark)

    def summary(self) -> str:
        failed, warned = self.marks.count(Mark.FAIL), self.marks.count(Mark.WARN)
        if failed:
            return f"{failed} ❌ and {warned} ⚠️: fix the ❌ lines, then run this again."
        if warned:
            return f"Nothing stops Atelier; {warned} ⚠️ to look at."
        return "All good."


def configuration_problem(error: Exception, out: TextIO = sys.stdout) -> int:
    """The table when the settings themselves cannot be read: nothing else can be checked."""
    report = Report(out)
    report(Finding(Mark.FAIL, "configuration", str(error)))
    print(report.summary(), file=out)
    return 1


async def examine(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Run every check, print the table and the invite link; 1 when a line is ❌, else 0."""
    report = Report(out)
    env = Path(".env").absolute()
    report(Finding(Mark.OK, "configuration", f"read from {env} and the environment"
                   if env.is_file() else "read from the environment (no .env here)"))
    # 1. This machine
    report(await asyncio.to_thread(checks.check_data_dir, settings, create=False))
    report(await asyncio.to_thread(checks.check_database, settings))
    report(await asyncio.to_thread(checks.check_torch))
    device, half = await asyncio.to_thread(checks.check_device, settings)
    report(device)
    for finding in await asyncio.to_thread(
            checks.check_models, settings, half=half, hub_timeout=checks.DOCTOR_HUB_TIMEOUT,
            sizes=True, unreachable=Mark.WARN):
        report(finding)
    report(await asyncio.to_thread(checks.check_loras, settings))
    if settings.executor == "ray":
        report(await asyncio.to_thread(checks.check_ray, settings))
    # 2. Discord
    application_id = await check_discord(settings, report)
    print(file=out)
    if application_id is not None:
        print(f"Invite link (scopes bot and applications.commands; {', '.join(labels(NEEDED))}):"
              f"\n  {invite_url(application_id)}", file=out)
    else:
        print("Invite link: needs a token Discord accepts (the link holds the application's id)",
              file=out)
    print(report.summary(), file=out)
    return 1 if Mark.FAIL in report.marks else 0


async def check_discord(settings: Settings, report: Callable[[Finding], None]) -> int | None:
    """The token, the gateway, the servers; the application's id when the token works."""
    if not settings.discord_token:
        report(Finding(Mark.FAIL, "Discord", "DISCORD_TOKEN is not set: put the bot's token in "
                       ".env (Developer Portal → your application → Bot → Reset Token)"))
        return None
    from bot.client import point_at, quiet_voice_warnings

    point_at(settings.discord_api_base, settings.discord_gateway_url)
    quiet_voice_warnings()
    client = discord.Client(intents=discord.Intents(guilds=True))
    try:
        async with asyncio.timeout(DISCORD_TIMEOUT):
            return await _check_discord(client, settings, report)
    except TimeoutError:
        report(Finding(Mark.FAIL, "Discord", f"Discord did not answer within "
                       f"{DISCORD_TIMEOUT:.0f} s: check this machine's internet connection"))
        return None
    finally:
        await client.close()


async def _check_discord(client: discord.Client, settings: Settings,
                         report: Callable[[Finding], None]) -> int | None:
    # 1. The token
    try:
        await client.login(settings.discord_token)
    except discord.LoginFailure:
        report(Finding(Mark.FAIL, "Discord", TOKEN_REFUSED))
        return None
    except UNREACHABLE as error:
        where = settings.discord_api_base or "discord.com"
        report(Finding(Mark.FAIL, "Discord", f"Discord is not reachable at {where} "
                       f"({reason(error)}): check this machine's internet connection, DNS and "
                       "firewall"))
        return None
    application, user = client.application, client.user
    assert application is not None and user is not None
    report(Finding(Mark.OK, "Discord", f"DISCORD_TOKEN accepted: bot {user} ({user.id}), "
                   f"application {application.id}"))
    if application.interactions_endpoint_url:
        report(Finding(Mark.FAIL, "Discord", "the application has an Interactions Endpoint URL, "
                       "so Discord sends commands there instead of to the bot: clear it under "
                       "General Information in the Developer Portal"))
    # 2. The gateway
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    try:
        await gateway_hello(gateway)
    except UNREACHABLE as error:
        report(Finding(Mark.FAIL, "gateway", f"Discord's gateway {gateway} is not reachable "
                       f"({reason(error)}): check this machine's firewall and proxy"))
    else:
        report(Finding(Mark.OK, "gateway", f"{gateway} answers"))
    # 3. The servers: commands and permissions
    try:
        await check_servers(client, application.id, settings, report)
    except (discord.HTTPException, *UNREACHABLE) as error:
        said = (f"{error.status} {error.text}" if isinstance(error, discord.HTTPException)
                else reason(error))
        report(Finding(Mark.FAIL, "servers", f"Discord failed to list the bot's servers and "
                       f"commands ({said}): run this again in a while"))
    return application.id


async def check_servers(client: discord.Client, application_id: int, settings: Settings,
                        report: Callable[[Finding], None]) -> None:
    guilds = [guild async for guild in client.fetch_guilds(limit=None)]
    if not guilds:
        report(Finding(Mark.WARN, "servers", "the bot is in no server yet: open the invite link "
                       "below and pick one"))
    dev_guild = settings.dev_guild_id
    if dev_guild is not None and all(guild.id != dev_guild for guild in guilds):
        report(Finding(Mark.FAIL, "servers", f"DEV_GUILD_ID={dev_guild}: the bot is not in that "
                       "server: invite it there with the link below, or unset DEV_GUILD_ID"))
    expected = expected_commands()
    registered = {command["name"] for command in
                  await client.http.get_global_commands(application_id)}
    for guild in guilds[:MAX_SERVERS]:
        report(await check_server(client, guild, application_id, expected, registered, settings))
    if len(guilds) > MAX_SERVERS:
        report(Finding(Mark.OK, "servers", f"and {len(guilds) - MAX_SERVERS} more servers, not "
                       "checked one by one"))


async def check_server(client: discord.Client, guild: discord.Guild, application_id: int,
                       expected: set[str], registered: set[str], settings: Settings) -> Finding:
    """One server: are the commands there, and may the bot post results in its channels."""
    topic = f"server {guild.name}"
    assert client.user is not None
    try:
        full = await client.fetch_guild(guild.id)
        channels = await full.fetch_channels()
        me = await full.fetch_member(client.user.id)
    except discord.HTTPException as error:
        return Finding(Mark.FAIL, topic, f"cannot be read ({error.status} {error.text})")
    # 1. Commands: the global ones, and this server's own (DEV_GUILD_ID)
    try:
        here = {command["name"] for command in
                await client.http.get_guild_commands(application_id, guild.id)}
    except discord.Forbidden:
        mark, said = Mark.FAIL, ("the bot was invited without the applications.commands scope, "
                                 "so its commands do not show here: open the invite link below "
                                 "and pick this server again")
    else:
        missing = expected - registered - here
        if not missing:
            mark, said = Mark.OK, f"{len(expected)} commands registered"
        elif settings.dev_guild_id is not None and settings.dev_guild_id != guild.id:
            mark, said = Mark.WARN, (f"no commands here: DEV_GUILD_ID={settings.dev_guild_id} "
                                     "registers them in that server only")
        elif missing == expected:
            mark, said = Mark.WARN, ("commands not registered yet: the bot registers them as it "
                                     "starts")
        else:
            names = ", ".join(f"/{name}" for name in sorted(missing)[:3])
            mark, said = Mark.WARN, (f"commands out of date ({names} missing): the bot registers "
                                     "them again as it starts")
    # 2. Permissions in its text channels
    permissions = server_report(me, channels, settings.allowed_channels)
    if permissions.broken:
        mark = Mark.FAIL
    elif not permissions.fine and mark is Mark.OK:
        mark = Mark.WARN
    return Finding(mark, topic, f"{said}; {permissions.describe()}")


def expected_commands() -> set[str]:
    """The slash commands this checkout registers, read from its cogs' classes (a cog needs a
    running bot to be made; its class already lists its commands)."""
    from discord.ext import commands

    from bot.client import EXTENSIONS

    names: set[str] = set()
    for extension in EXTENSIONS:
        module = importlib.import_module(extension)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, commands.Cog)
                    and value.__module__ == module.__name__):
                names.update(command.name for command in value.__cog_app_commands__)
    return names
