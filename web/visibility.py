"""Who sees what in the gallery (SPEC §6 Visibility, §8): a signed-in person's scope in a server,
from their member object and the bot's cache of channels, roles and overwrites.

The bot has no members intent, so members are fetched over REST and kept a few minutes; their
roles decide the channels they see, and the same cache names the authors of jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import discord

from bot.visibility import visible_channels
from storage import Scope

MEMBER_TTL = 300.0  # seconds a fetched member (their roles) is trusted
NAME_FETCHES = 4  # members fetched at once when naming the authors of a page
SWEEP_AT = 10_000  # members remembered before the stale ones are forgotten
FORMER_MEMBER = "former member"
UNKNOWN_MEMBER = "unknown member"


class Guilds(Protocol):
    """The part of the bot the gallery's visibility needs: its cached servers."""

    def get_guild(self, guild_id: int, /) -> discord.Guild | None: ...


class Members:
    """Members of the bot's servers, fetched over REST and kept `ttl` seconds (None: not a
    member). Concurrent requests for one member share one fetch."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 ttl: float = MEMBER_TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        self._known: dict[tuple[int, int], tuple[float, discord.Member | None]] = {}
        self._pending: dict[tuple[int, int], asyncio.Future[discord.Member | None]] = {}

    async def get(self, guild: discord.Guild, user_id: int) -> discord.Member | None:
        """`user_id` as a member of `guild`, or None if they are not one. Raises
        `discord.HTTPException` when Discord does not answer."""
        key = (guild.id, user_id)
        known = self._known.get(key)
        if known is not None and self.clock() - known[0] < self.ttl:
            return known[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(guild, user_id))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        # Shielded: one viewer closing their page must not cancel the fetch others wait on.
        return await asyncio.shield(pending)

    async def _fetch(self, guild: discord.Guild, user_id: int) -> discord.Member | None:
        try:
            member: discord.Member | None = await guild.fetch_member(user_id)
        except discord.NotFound:
            member = None
        now = self.clock()
        if len(self._known) >= SWEEP_AT:
            self._known = {key: entry for key, entry in self._known.items()
                           if now - entry[0] < self.ttl}
        self._known[(guild.id, user_id)] = (now, member)
        return member

    async def names(self, guild: discord.Guild, user_ids: Iterable[int]) -> dict[int, str]:
        """The display names of these users in `guild` (`former member` for those who left)."""
        limit = asyncio.Semaphore(NAME_FETCHES)

        async def name(user_id: int) -> tuple[int, str]:
            async with limit:
                try:
                    member = await self.get(guild, user_id)
                except discord.HTTPException:
                    return user_id, UNKNOWN_MEMBER
            return user_id, member.display_name if member is not None else FORMER_MEMBER

        return dict(await asyncio.gather(*(name(user_id) for user_id in dict.fromkeys(user_ids))))


async def viewer_scope(bot: Guilds, members: Members, guild_id: int,
                       user_id: int) -> Scope | None:
    """The jobs of server `guild_id` that user `user_id` may see: those of the channels they can
    view, and their own; None when the bot is not in that server or they are not a member."""
    guild = bot.get_guild(guild_id)
    if guild is None:
        return None
    member = await members.get(guild, user_id)
    if member is None:
        return None
    return Scope(guild.id, user_id, visible_channels(guild, member))
