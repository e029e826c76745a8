"""Helpers to run a real discord.py client against a :class:`DiscordDouble`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import discord
import yarl

if TYPE_CHECKING:
    from .server import DiscordDouble


@contextlib.contextmanager
def discord_py_pointed_at(double: DiscordDouble) -> Iterator[None]:
    """Point discord.py's REST base and default gateway at ``double``; restore after."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = double.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(double.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running_bot(
    double: DiscordDouble,
    client: discord.Client,
    *,
    ready_timeout: float = 10.0,
    wait_for_commands: bool = False,
) -> AsyncIterator[discord.Client]:
    """Start ``client`` against ``double``, wait until READY went out, close it after.

    With ``wait_for_commands`` it also waits for a command sync. A crash of the
    client task is re-raised instead of surfacing later as a timeout.
    """
    session = None
    with discord_py_pointed_at(double):
        baseline = double.gateway.ready_count
        task = asyncio.ensure_future(client.start(double.token))
        waiter = asyncio.ensure_future(double.wait_ready(ready_timeout, count=baseline + 1))
        try:
            done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises the client's error
                raise RuntimeError("the client stopped before it was ready")
            waiter.result()
            session = double.gateway.current
            if wait_for_commands:
                await double.wait_for_commands(ready_timeout)
            yield client
        finally:
            waiter.cancel()
            if not client.is_closed():
                await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        # Return only once the double has seen the session end, so a test that
        # interacts now gets "no bot connected" instead of a silently queued event.
        if session is not None:
            await double.wait_for(
                lambda: session.invalidated or session.connection is None,
                5,
                description="the double to notice the bot disconnecting",
            )
