"""World and record types of the Discord double.

Everything here is plain data plus a little behaviour: the users, guilds and
channels the double pretends exist, the messages the bot creates, and the
handles tests use to follow one interaction from dispatch to answer.

Ids are snowflake ints. The JSON produced by the ``to_dict``/``*_payload``
helpers mirrors Discord API v10 closely enough for discord.py 2.7 to parse it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .server import DiscordDouble

DISCORD_EPOCH_MS = 1420070400000

# Message flags the double interprets.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15
# Flags a bot may change when it edits a message; the others are owned by Discord.
EDITABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2


class Perm(enum.IntFlag):
    """The permission bits the double computes with (Discord's values)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    MANAGE_ROLES = 1 << 28
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    SEND_MESSAGES_IN_THREADS = 1 << 38


ALL_PERMISSIONS = (1 << 51) - 1

# What @everyone may do in a fresh guild.
DEFAULT_EVERYONE_PERMISSIONS = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CONNECT
    | Perm.SPEAK
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES_IN_THREADS
)

# Permissions the bot's managed role grants (what an invite link would ask for).
DEFAULT_BOT_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.ADD_REACTIONS
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.SEND_MESSAGES_IN_THREADS
)


# --------------------------------------------------------------------------- ids and time

_snowflake_lock = threading.Lock()
_snowflake_counter = itertools.count()
_last_snowflake = 0


def next_snowflake() -> int:
    """A fresh, strictly increasing snowflake built from the current time."""
    global _last_snowflake
    with _snowflake_lock:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (ms << 22) | (1 << 17) | (next(_snowflake_counter) & 0xFFF)
        if value <= _last_snowflake:
            value = _last_snowflake + 1
        _last_snowflake = value
        return value


def snowflake_time(snowflake: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- world


@dataclass(eq=False)
class Role:
    """A guild role. The @everyone role has the guild's id."""

    id: int
    name: str
    permissions: int = 0
    position: int = 0
    managed: bool = False
    bot_id: int | None = None  # set for a bot's managed role

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(int(self.permissions)),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            payload["tags"] = {"bot_id": str(self.bot_id)}
        return payload


@dataclass(eq=False)
class Member:
    """A Discord user, and its membership (roles) in the guilds it has joined.

    The same object stands for the user everywhere: ``roles`` maps a guild id to
    the ids of the roles the user holds there (without @everyone).
    """

    id: int
    name: str
    bot: bool = False
    global_name: str | None = None
    locale: str = "en-US"
    dms_open: bool = True  # False: the bot gets 50007 when it tries to DM this user
    roles: dict[int, list[int]] = field(default_factory=dict)
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime(2024, 1, 1, tzinfo=dt.UTC))

    @property
    def display_name(self) -> str:
        return self.global_name or self.name

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def user_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
            "collectibles": None,
        }

    def __repr__(self) -> str:
        return f"<Member {self.name} id={self.id}{' bot' if self.bot else ''}>"


PUBLIC_THREAD, PRIVATE_THREAD = 11, 12


@dataclass(eq=False)
class Channel:
    """A guild text channel (type 0), a DM channel (type 1), or a thread (type 11 public,
    12 private) of a text channel (``parent_id``)."""

    id: int
    name: str
    type: int = 0
    guild_id: int | None = None
    nsfw: bool = False
    position: int = 0
    topic: str | None = None
    recipient: Member | None = None  # DM channels only
    # target id -> (allow, deny, target type 0 role / 1 member)
    overwrites: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    last_message_id: int | None = None
    parent_id: int | None = None  # threads only
    owner_id: int | None = None  # threads only: who started it
    thread_members: set[int] = field(default_factory=set)  # threads only

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    @property
    def is_thread(self) -> bool:
        return self.type in (PUBLIC_THREAD, PRIVATE_THREAD)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def to_dict(self) -> dict[str, Any]:
        if self.is_dm:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": _opt_str(self.last_message_id),
                "recipients": [self.recipient.user_payload()],
                "flags": 0,
            }
        if self.is_thread:
            return {
                "id": str(self.id),
                "type": self.type,
                "guild_id": str(self.guild_id),
                "parent_id": str(self.parent_id),
                "owner_id": str(self.owner_id),
                "name": self.name,
                "nsfw": self.nsfw,
                "last_message_id": _opt_str(self.last_message_id),
                "rate_limit_per_user": 0,
                "message_count": 0,
                "member_count": len(self.thread_members),
                "flags": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": iso(utcnow()),
                    "locked": False,
                    "invitable": False,
                },
            }
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "nsfw": self.nsfw,
            "topic": self.topic,
            "parent_id": None,
            "last_message_id": _opt_str(self.last_message_id),
            "rate_limit_per_user": 0,
            "flags": 0,
            "permission_overwrites": [
                {"id": str(target), "type": kind, "allow": str(allow), "deny": str(deny)}
                for target, (allow, deny, kind) in self.overwrites.items()
            ],
        }

    def __repr__(self) -> str:
        return f"<Channel #{self.name} id={self.id} type={self.type}>"


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    threads: list[Channel] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    locale: str = "en-US"
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    # False: the bot was invited with the `bot` scope alone, and Discord answers 403 Missing
    # Access to the application's commands of this guild.
    commands_scope: bool = True

    @property
    def everyone(self) -> Role:
        return self.role(self.id)

    def role(self, role_id: int) -> Role:
        for role in self.roles:
            if role.id == role_id:
                return role
        raise KeyError(f"guild {self.name!r} has no role {role_id}")

    def has_member(self, user: Member | int) -> bool:
        user_id = user if isinstance(user, int) else user.id
        return any(m.id == user_id for m in self.members)

    def base_permissions(self, member: Member) -> int:
        """Guild-level permissions of a member (roles, ownership, administrator)."""
        if member.id == self.owner_id:
            return ALL_PERMISSIONS
        perms = int(self.everyone.permissions)
        for role_id in member.roles.get(self.id, []):
            perms |= int(self.role(role_id).permissions)
        if perms & Perm.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def permissions_in(self, member: Member, channel: Channel) -> int:
        """Channel-level permissions, overwrites applied the way Discord does. A thread has
        its parent's; a private thread is seen only by its members and those who may manage
        threads."""
        if channel.is_thread:
            parent = next(c for c in self.channels if c.id == channel.parent_id)
            perms = self.permissions_in(member, parent)
            private = channel.type == PRIVATE_THREAD
            if (private and member.id not in channel.thread_members
                    and not perms & Perm.MANAGE_THREADS):
                perms &= ~Perm.VIEW_CHANNEL
            return perms
        perms = self.base_permissions(member)
        if perms == ALL_PERMISSIONS:
            return perms
        everyone = channel.overwrites.get(self.id)
        if everyone:
            perms = (perms & ~everyone[1]) | everyone[0]
        allow = deny = 0
        for role_id in member.roles.get(self.id, []):
            ow = channel.overwrites.get(role_id)
            if ow and ow[2] == 0:
                allow |= ow[0]
                deny |= ow[1]
        perms = (perms & ~deny) | allow
        own = channel.overwrites.get(member.id)
        if own and own[2] == 1:
            perms = (perms & ~own[1]) | own[0]
        return perms

    def member_payload(
        self, member: Member, *, with_user: bool = True, channel: Channel | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "roles": [str(r) for r in member.roles.get(self.id, [])],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": iso(member.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            payload["user"] = member.user_payload()
        if channel is not None:
            payload["permissions"] = str(self.permissions_in(member, channel))
        return payload

    def to_dict(self, *, full: bool = True) -> dict[str, Any]:
        """The GUILD_CREATE shape (``full``) or the REST ``GET /guilds/{id}`` shape."""
        system_channel = self.channels[0].id if self.channels else None
        payload: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.locale,
            "system_channel_id": _opt_str(system_channel),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "widget_enabled": False,
            "features": [],
            "roles": [r.to_dict() for r in self.roles],
            "emojis": [],
            "stickers": [],
        }
        if full:
            payload.update(
                {
                    "joined_at": iso(self.joined_at),
                    "large": False,
                    "unavailable": False,
                    "lazy": True,
                    "member_count": len(self.members),
                    "members": [self.member_payload(m) for m in self.members],
                    "channels": [c.to_dict() for c in self.channels],
                    "threads": [t.to_dict() for t in self.threads],
                    "voice_states": [],
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                    "embedded_activities": [],
                    "activity_instances": [],
                }
            )
        return payload

    def __repr__(self) -> str:
        return f"<Guild {self.name!r} id={self.id}>"


# --------------------------------------------------------------------------- messages


@dataclass(eq=False)
class Attachment:
    """A file on a message, or a file a user attached to a slash command option."""

    filename: str
    data: bytes
    content_type: str | None
    id: int
    size: int
    description: str | None = None
    width: int | None = None
    height: int | None = None
    url: str = ""
    ephemeral: bool = False

    def to_dict(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            payload["description"] = self.description
        if self.width is not None and self.height is not None:
            payload["width"] = self.width
            payload["height"] = self.height
        if self.ephemeral:
            payload["ephemeral"] = True
        return payload

    def __repr__(self) -> str:
        return f"<Attachment {self.filename!r} {self.size} bytes id={self.id}>"


@dataclass(frozen=True)
class Button:
    label: str | None
    emoji: str | None
    custom_id: str | None
    style: int
    disabled: bool
    url: str | None

    @property
    def text(self) -> str:
        """What a user reads on the button: label, emoji name, or "emoji label"."""
        if self.emoji and self.label:
            return f"{self.emoji} {self.label}"
        return self.label or self.emoji or ""

    @classmethod
    def from_component(cls, component: dict[str, Any]) -> Button:
        emoji = component.get("emoji") or None
        return cls(
            label=component.get("label"),
            emoji=emoji.get("name") if isinstance(emoji, dict) else None,
            custom_id=component.get("custom_id"),
            style=int(component.get("style", 1)),
            disabled=bool(component.get("disabled", False)),
            url=component.get("url"),
        )


SELECT_TYPES = (3, 5, 6, 7, 8)


def component_rows(components: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Interactive components grouped by the row a user sees them in.

    Handles classic action rows and the components-v2 layout (containers,
    sections with a button accessory).
    """
    rows: list[list[dict[str, Any]]] = []
    for comp in components:
        kind = comp.get("type")
        if kind == 1:
            rows.append(list(comp.get("components", [])))
        elif kind == 17:
            rows.extend(component_rows(comp.get("components", [])))
        elif kind == 9:
            accessory = comp.get("accessory")
            if isinstance(accessory, dict) and accessory.get("type") == 2:
                rows.append([accessory])
    return rows


def walk_components(components: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Every component in a (possibly nested) component tree, depth first."""
    for comp in components:
        yield comp
        if "components" in comp:
            yield from walk_components(comp["components"])
        for key in ("component", "accessory"):
            child = comp.get(key)
            if isinstance(child, dict):
                yield from walk_components([child])


class Message:
    """A message the double stores: everything the bot posted, plus user posts.

    The same object is updated in place when the bot edits or deletes the
    message, so a test can keep a reference and watch it change.
    """

    def __init__(
        self,
        double: DiscordDouble,
        *,
        id: int,
        channel_id: int,
        guild_id: int | None,
        author: Member,
        content: str = "",
        flags: int = 0,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        attachments: list[Attachment] | None = None,
        type: int = 0,
        payload: dict[str, Any] | None = None,
        allowed_mentions: dict[str, Any] | None = None,
        webhook_id: int | None = None,
        application_id: int | None = None,
        interaction_metadata: dict[str, Any] | None = None,
        interaction_user_id: int | None = None,
        message_reference: dict[str, Any] | None = None,
        tts: bool = False,
    ) -> None:
        self._double = double
        self.id = id
        self.channel_id = channel_id
        self.guild_id = guild_id
        self.author = author
        self.content = content
        self.flags = flags
        self.embeds: list[dict[str, Any]] = embeds or []
        self.components: list[dict[str, Any]] = components or []
        self.attachments: list[Attachment] = attachments or []
        self.type = type
        self.payload: dict[str, Any] = payload or {}  # raw JSON of the latest create/edit
        self.payloads: list[dict[str, Any]] = [self.payload] if payload is not None else []
        self.allowed_mentions = allowed_mentions
        self.webhook_id = webhook_id
        self.application_id = application_id
        self.interaction_metadata = interaction_metadata
        self.interaction_user_id = interaction_user_id
        self.message_reference = message_reference
        self.tts = tts
        self.created_at = snowflake_time(id)
        self.edited_at: dt.datetime | None = None
        self.deleted = False
        self.edits = 0
        self.reactions: dict[str, set[int]] = {}
        self.history: list[dict[str, Any]] = []
        # Discord notifies the users a message mentions when it is created, never on an edit
        # (an edit that adds a mention shows it, silently).
        self.pinged_user_ids: list[int] = (
            [] if self.loading or self.ephemeral else self.mentioned_user_ids)
        self._snapshot()

    # -- state -----------------------------------------------------------------

    @property
    def author_id(self) -> int:
        return self.author.id

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while this is a deferred "thinking" placeholder nobody edited yet."""
        return bool(self.flags & FLAG_LOADING)

    def _visible_state(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "embeds": self.embeds,
            "components": self.components,
            "attachments": [a.filename for a in self.attachments],
            "attachment_ids": [a.id for a in self.attachments],
            "loading": self.loading,
        }

    def _snapshot(self) -> None:
        """Append a history entry when what a user sees changed."""
        state = self._visible_state()
        if self.history:
            last = {k: v for k, v in self.history[-1].items() if k not in ("time", "flags")}
            if last == state:
                return
        self.history.append({**state, "flags": self.flags, "time": time.monotonic()})

    # -- what users see ----------------------------------------------------------

    @property
    def buttons(self) -> list[list[Button]]:
        """Rows of buttons (rows without buttons are left out)."""
        rows = []
        for row in component_rows(self.components):
            buttons = [Button.from_component(c) for c in row if c.get("type") == 2]
            if buttons:
                rows.append(buttons)
        return rows

    @property
    def button_labels(self) -> list[list[str]]:
        return [[b.text for b in row] for row in self.buttons]

    @property
    def selects(self) -> list[dict[str, Any]]:
        selects = []
        for row in component_rows(self.components):
            for comp in row:
                if comp.get("type") in SELECT_TYPES:
                    selects.append(
                        {
                            "type": comp.get("type"),
                            "custom_id": comp.get("custom_id"),
                            "options": comp.get("options", []),
                            "placeholder": comp.get("placeholder"),
                            "min_values": comp.get("min_values", 1),
                            "max_values": comp.get("max_values", 1),
                            "disabled": comp.get("disabled", False),
                        }
                    )
        return selects

    def find_component(self, custom_id: str) -> dict[str, Any] | None:
        for comp in walk_components(self.components):
            if comp.get("custom_id") == custom_id:
                return comp
        return None

    def attachment_bytes(self, i: int = 0) -> bytes:
        return self.attachments[i].data

    @property
    def mentioned_user_ids(self) -> list[int]:
        """Users this message pings, honouring ``allowed_mentions`` like Discord."""
        ids = [int(x) for x in re.findall(r"<@!?(\d+)>", self.content)]
        allowed = self.allowed_mentions
        if allowed is None:
            return list(dict.fromkeys(ids))
        parse = allowed.get("parse") or []
        explicit = {int(x) for x in allowed.get("users") or []}
        if "users" in parse:
            return list(dict.fromkeys(ids))
        return list(dict.fromkeys(i for i in ids if i in explicit))

    @property
    def mentions_everyone(self) -> bool:
        if "@everyone" not in self.content and "@here" not in self.content:
            return False
        if self.allowed_mentions is None:
            return True
        return "everyone" in (self.allowed_mentions.get("parse") or [])

    # -- waiting -----------------------------------------------------------------

    async def wait_until(
        self, predicate: Callable[[Message], Any], timeout: float = 10.0
    ) -> Message:
        """Wait until ``predicate(self)`` is truthy; returns this message."""
        await self._double.wait_for(
            lambda: predicate(self), timeout=timeout, description=f"message {self.id}"
        )
        return self

    # -- JSON ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        double = self._double
        mentions = []
        for user_id in self.mentioned_user_ids:
            user = double.users.get(user_id)
            if user is not None:
                mentions.append(user.user_payload())
        payload: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "channel_id": str(self.channel_id),
            "author": self.author.user_payload(),
            "content": self.content,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at) if self.edited_at else None,
            "tts": self.tts,
            "mention_everyone": self.mentions_everyone,
            "mentions": mentions,
            "mention_roles": [],
            "mention_channels": [],
            "attachments": [a.to_dict() for a in self.attachments],
            "embeds": self.embeds,
            "pinned": False,
            "flags": self.flags,
            "components": self.components,
        }
        if self.guild_id is not None:
            payload["guild_id"] = str(self.guild_id)
        if self.reactions:
            payload["reactions"] = [
                {
                    "emoji": _emoji_payload(emoji),
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "burst_colors": [],
                    "me": double.bot_user.id in users,
                    "me_burst": False,
                }
                for emoji, users in self.reactions.items()
                if users
            ]
        if self.webhook_id is not None:
            payload["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            payload["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            payload["interaction_metadata"] = self.interaction_metadata
        if self.message_reference is not None:
            payload["message_reference"] = self.message_reference
            ref_id = self.message_reference.get("message_id")
            ref = double._messages.get(int(ref_id)) if ref_id else None
            if ref is not None and ref is not self:
                payload["referenced_message"] = None if ref.deleted else ref.to_dict()
        return payload

    def __repr__(self) -> str:
        bits = []
        if self.ephemeral:
            bits.append("ephemeral")
        if self.loading:
            bits.append("loading")
        if self.deleted:
            bits.append("deleted")
        files = f" files={[a.filename for a in self.attachments]}" if self.attachments else ""
        return (
            f"<Message id={self.id} channel={self.channel_id} by={self.author.name}"
            f" {self.content[:60]!r}{files}{' ' + ','.join(bits) if bits else ''}>"
        )


def _emoji_payload(emoji: str) -> dict[str, Any]:
    name, _, emoji_id = emoji.partition(":")
    return {"id": emoji_id or None, "name": name}


def _opt_str(value: int | None) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- interactions


@dataclass(frozen=True)
class Callback:
    """One interaction callback the bot sent (``POST /interactions/.../callback``)."""

    type: int
    data: dict[str, Any]
    ephemeral: bool
    at: float


class InteractionHandle:
    """Follows one interaction the double dispatched to the bot."""

    def __init__(
        self,
        double: DiscordDouble,
        *,
        id: int,
        token: str,
        type: int,
        payload: dict[str, Any],
        user: Member,
        channel: Channel,
        guild: Guild | None,
        message: Message | None = None,
        name: str | None = None,
    ) -> None:
        self._double = double
        self.id = id
        self.token = token
        self.type = type
        self.payload = payload  # the INTERACTION_CREATE data sent to the bot
        self.user = user
        self.channel = channel
        self.guild = guild
        self.message = message  # the message a component sat on, if any
        self.name = name  # command name, for app commands
        self.callbacks: list[Callback] = []
        self.followups: list[Message] = []
        self.modal: dict[str, Any] | None = None
        self.original_message: Message | None = None
        self.sent_at: float | None = None
        self.acked_at: float | None = None
        self.expired = False

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)

    @property
    def ack_seconds(self) -> float | None:
        """Seconds from dispatch to the bot's first callback, or None."""
        if self.acked_at is None or self.sent_at is None:
            return None
        return self.acked_at - self.sent_at

    async def response(self, timeout: float = 10.0) -> Callback:
        """The first callback the bot sent for this interaction."""
        await self._double.wait_for(
            lambda: self.callbacks, timeout=timeout, description=f"a response to {self!r}"
        )
        return self.callbacks[0]

    async def original(self, timeout: float = 10.0) -> Message:
        """The message the response created (type 4/5) or updated (type 6/7)."""
        response = await self.response(timeout)
        if response.type not in (4, 5, 6, 7):
            raise LookupError(
                f"{self!r} was answered with callback type {response.type}; "
                "only types 4, 5, 6 and 7 have an original message"
            )
        assert self.original_message is not None
        return self.original_message

    def __repr__(self) -> str:
        kind = {2: "command", 3: "component", 4: "autocomplete", 5: "modal"}.get(self.type, "?")
        what = f" {self.name!r}" if self.name else ""
        return f"<InteractionHandle {kind}{what} id={self.id} by={self.user.name}>"


# --------------------------------------------------------------------------- faults, records


class RequestRecord(NamedTuple):
    """One REST request: ``path`` is relative to the API base (``/channels/1/messages``)."""

    method: str
    path: str
    status: int
    time: float


@dataclass(eq=False)
class Fault:
    """A scripted failure: the next ``times`` matching requests misbehave."""

    method: str | None
    pattern: re.Pattern[str]
    status: int | None = 500
    times: int | None = 1  # None: every matching request, until cancelled
    retry_after: float | None = None
    delay: float | None = None
    body: Any = None
    # With status None: stall after handling the request instead of before (Discord did it;
    # its answer is late).
    late_answer: bool = False
    hits: int = 0
    cancelled: bool = False
    # Set while held requests may go on (see ``DiscordDouble.fail(hold=True)``).
    gate: asyncio.Event | None = None

    @property
    def active(self) -> bool:
        return not self.cancelled and (self.times is None or self.hits < self.times)

    def matches(self, method: str, path: str) -> bool:
        if not self.active:
            return False
        if self.method not in (None, "*") and self.method.upper() != method.upper():
            return False
        return self.pattern.search(path) is not None

    def cancel(self) -> None:
        self.cancelled = True
        self.release()

    def release(self) -> None:
        """Let the requests this fault holds go on."""
        if self.gate is not None:
            self.gate.set()


class ApiError(Exception):
    """Raised inside a route handler to answer with a Discord-style JSON error."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def form_error(path: str, code: str, message: str) -> ApiError:
    """A 400 "Invalid Form Body" error pointing at a dotted field path."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return ApiError(400, 50035, "Invalid Form Body", errors=errors)
