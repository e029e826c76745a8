"""Which of a server's channels a member can view: what decides whose jobs they are shown
(SPEC §6 Visibility).

Computed from discord.py's cache of the server (channels, threads, roles and overwrites arrive
with the `guilds` intent, no privileged intent needed) and a member object, whether it came
with an interaction or from REST; nothing here needs an interaction."""

from __future__ import annotations

import discord


def visible_channels(guild: discord.Guild, member: discord.Member) -> frozenset[int]:
    """The ids of the channels and cached threads of `guild` that `member` can view.

    A public thread follows its parent channel. A private thread is seen by its own members,
    whom the bot does not know without the members intent, so here only by those who may
    manage its parent's threads (as in Discord). Channels missing from the cache (deleted
    ones, threads the bot has not seen) are not in the set: their jobs are their authors'."""
    visible = {channel.id for channel in guild.channels
               if channel.permissions_for(member).view_channel}
    for thread in guild.threads:
        parent = thread.parent
        if parent is None or parent.id not in visible:
            continue
        if thread.type is discord.ChannelType.private_thread:
            if not parent.permissions_for(member).manage_threads:
                continue
        visible.add(thread.id)
    return frozenset(visible)
