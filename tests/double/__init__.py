"""A loopback Discord (REST v10 + gateway) for driving the real discord.py client in tests.

Typical use::

    async with running_bot(double, bot):
        h = await double.slash("imagine", {"prompt": "a red fox"}, user=double.alice)
        msg = await h.original()
        await msg.wait_until(lambda m: not m.loading)
"""

from .harness import discord_py_pointed_at, running_bot
from .models import (
    ApiError,
    Attachment,
    Button,
    Callback,
    Channel,
    Fault,
    Guild,
    InteractionHandle,
    Member,
    Message,
    Perm,
    RequestRecord,
    Role,
)
from .server import DiscordDouble

__all__ = [
    "ApiError",
    "Attachment",
    "Button",
    "Callback",
    "Channel",
    "DiscordDouble",
    "Fault",
    "Guild",
    "InteractionHandle",
    "Member",
    "Message",
    "Perm",
    "RequestRecord",
    "Role",
    "discord_py_pointed_at",
    "running_bot",
]
