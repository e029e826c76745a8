"""Starting against Discord: log in, then connect to the gateway, and while Discord cannot be
reached say so in one line per attempt and try again with backoff, as discord.py does for the
gateway once connected, instead of ending in a traceback. A token Discord refuses is a
`ConfigError`: one line, and the process ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator

import aiohttp
import discord
import yarl

from bot import checks
from bot.checks import Mark, preflight
from bot.config import ConfigError, Settings

log = logging.getLogger(__name__)

TOKEN_REFUSED = ("Discord refused DISCORD_TOKEN — reset it under Bot in the Developer Portal "
                 "and put the new one in .env")
MAX_DELAY = 60  # seconds between attempts, at most
GATEWAY_TIMEOUT = 20.0  # seconds for the gateway's HELLO
# What a network without a route to Discord, or a Discord that is down, raises.
UNREACHABLE = (OSError, aiohttp.ClientError, asyncio.TimeoutError, discord.DiscordServerError,
               discord.GatewayNotFound)


def check_here(settings: Settings) -> None:
    """Run start-up's own checks (the data folder, the device, the models): log what they
    found, raise `ConfigError` with the first ❌. Blocking: run it in a thread."""
    for finding in preflight(settings):
        if finding.mark is Mark.FAIL:
            raise ConfigError(finding.text)
        log.log(logging.INFO if finding.mark is Mark.OK else logging.WARNING, "%s", finding.text)


def delays() -> Iterator[int]:
    """1, 2, 4 … seconds, then a minute between attempts for as long as it takes."""
    delay = 1
    while True:
        yield delay
        delay = min(MAX_DELAY, delay * 2)


def reason(error: BaseException) -> str:
    """Why Discord could not be reached, in a few words (the host and the system's reason)."""
    if isinstance(error, discord.DiscordServerError):
        return f"{error.status} {error.response.reason}"
    return checks.reason(error)


async def stopped(stopping: asyncio.Event, delay: float) -> bool:
    """Wait `delay` seconds; True as soon as `stopping` is set (SIGTERM, Ctrl-C)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
    return stopping.is_set()


async def log_in(bot: discord.Client, token: str, stopping: asyncio.Event) -> bool:
    """`bot.login`, again and again while Discord cannot be reached; False when stopped first.

    `login` ends by running `setup_hook`; what fails in there is not retried (it has started
    things), so only failures before it, while `bot.application` is still unknown, are."""
    waits = delays()
    while True:
        try:
            await bot.login(token)
            return True
        except discord.LoginFailure as error:
            log.debug("Discord answered 401 to the token", exc_info=True)
            raise ConfigError(TOKEN_REFUSED) from error
        except Exception as error:
            if stopping.is_set():
                return False
            if not isinstance(error, UNREACHABLE) or bot.application is not None:
                raise
            delay = next(waits)
            log.warning("Discord is not reachable (%s); trying again in %d s", reason(error),
                        delay)
            log.debug("logging in failed", exc_info=True)
        # Each login makes a new HTTP session: close this one, and its connector with it.
        await bot.http.close()
        bot.http.connector = discord.utils.MISSING
        if await stopped(stopping, delay):
            return False


async def connect(bot: discord.Client, stopping: asyncio.Event) -> None:
    """Connect to the gateway and run until the bot closes.

    discord.py reconnects by itself once it has been connected, but cannot retry a first
    connection (2.7 reads the missing socket's sequence and raises AttributeError): wait for
    the gateway's HELLO before handing over."""
    waits = delays()
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    while not stopping.is_set() and not bot.is_closed():
        hello = asyncio.ensure_future(gateway_hello(gateway))
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({hello, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not hello.done():
            hello.cancel()
            return
        try:
            hello.result()
        except UNREACHABLE as error:
            delay = next(waits)
            log.warning("Discord's gateway is not reachable (%s); trying again in %d s",
                        reason(error), delay)
            log.debug("the gateway did not answer", exc_info=True)
            if await stopped(stopping, delay):
                return
            continue
        try:
            await bot.connect(reconnect=True)
            return
        except discord.ConnectionClosed as error:
            if error.code == 4004:  # Authentication failed: the token was reset meanwhile
                raise ConfigError(TOKEN_REFUSED) from error
            raise
        except AttributeError:
            if bot.ws is not None or bot.is_closed():
                raise
            log.debug("the first connection failed after the gateway answered", exc_info=True)
            delay = next(waits)
            log.warning("Discord's gateway did not take the connection; trying again in %d s",
                        delay)
            if await stopped(stopping, delay):
                return


async def gateway_hello(gateway: yarl.URL, timeout: float = GATEWAY_TIMEOUT) -> None:
    """Open a websocket to the gateway and wait for its HELLO; nothing is identified, so no
    session starts. Raises one of `UNREACHABLE` when the gateway does not answer."""
    url = gateway.with_query(v=10, encoding="json")
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as socket:
            message = await socket.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise aiohttp.ClientError(f"the gateway closed the connection ({message.data})")
            try:
                hello = json.loads(message.data).get("op") == 10
            except (ValueError, AttributeError):
                hello = False
            if not hello:
                raise aiohttp.ClientError("the gateway did not say HELLO")
