"""A loopback Discord: REST API v10 and gateway on 127.0.0.1, for end-to-end tests.

The real discord.py client logs in against :class:`DiscordDouble`, receives
guilds and interactions over the gateway, and answers through the same REST
routes it would use against Discord. Tests drive users' actions (slash
commands, clicks, selects, modals, context menus) and assert what users would
see: the stored :class:`~tests.double.models.Message` objects.

Point discord.py at it before ``bot.start(token)``::

    discord.http.Route.BASE = double.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(double.gateway_url)
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import inspect
import io
import json
import logging
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from .gateway import (
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_MESSAGE_CONTENT,
    Gateway,
)
from .models import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    EDITABLE_FLAGS,
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    SELECT_TYPES,
    ApiError,
    Attachment,
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
    form_error,
    next_snowflake,
    utcnow,
    walk_components,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DEFAULT_TOKEN = "MTI1MDAwMDAwMDAwMDAwMDAwMg.Gdoubl.atelier-loopback-test-token"
DEFAULT_CLIENT_SECRET = "double-oauth2-client-secret"
OAUTH_SCOPES = frozenset({"identify", "guilds", "email", "guilds.members.read"})
# The user routes an OAuth2 Bearer token may read; bot routes need the bot token.
BEARER_ROUTES = ("/users/@me", "/users/@me/guilds")
MiB = 1024 * 1024
POLL_INTERVAL = 0.05  # wait_for re-checks predicates at least this often
# A repeated post with the same nonce and `enforce_nonce` returns the first message when it
# comes within this many seconds ("the past few minutes", says Discord).
NONCE_WINDOW = 300.0
NONCE_MAX = 25  # characters in a string nonce
# Monotonic arrival time of a request (typed request keys exist from aiohttp 3.12 on).
ARRIVED: Any = web.RequestKey("arrived", float) if hasattr(web, "RequestKey") else "arrived"

# Fixed ids of the default world (valid snowflakes from mid 2024).
APPLICATION_ID = 1250000000000000001
BOT_USER_ID = 1250000000000000002
GUILD_ID = 1250000000000000100
GENERAL_CHANNEL_ID = 1250000000000000101
NSFW_CHANNEL_ID = 1250000000000000102
MOD_ROLE_ID = 1250000000000000110
BOT_ROLE_ID = 1250000000000000111
OWNER_ID = 1250000000000000200
ALICE_ID = 1250000000000000201
BOB_ID = 1250000000000000202
MOD_ID = 1250000000000000203
EVE_ID = 1250000000000000204
OTHER_GUILD_ID = 1250000000000000300
OTHER_CHANNEL_ID = 1250000000000000301
OTHER_BOT_ROLE_ID = 1250000000000000311

# Interaction types.
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

# Callback types each interaction type accepts.
ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {4, 5, 9},
    MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
    AUTOCOMPLETE: {8},
    MODAL_SUBMIT: {4, 5, 6, 7},
}

# What the snowflakes of option types / select menu types refer to.
OPTION_TARGETS = {
    6: frozenset({"user"}),
    7: frozenset({"channel"}),
    8: frozenset({"role"}),
    9: frozenset({"user", "role"}),
}
SELECT_TARGETS = {
    5: frozenset({"user"}),
    6: frozenset({"role"}),
    7: frozenset({"user", "role"}),
    8: frozenset({"channel"}),
}

OptionValue = Any
FileSpec = tuple[str, bytes] | tuple[str, bytes, str] | Attachment


@dataclass
class OAuthGrant:
    """What one authorization code, access token or refresh token stands for."""

    user: Member
    scopes: frozenset[str]
    redirect_uri: str


@dataclass
class Upload:
    """A ``files[n]`` part of a multipart request."""

    index: int
    filename: str
    data: bytes
    content_type: str | None


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py only parses bodies whose content type is exactly "application/json";
    # passing bytes keeps aiohttp from appending "; charset=utf-8".
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _no_content() -> web.Response:
    return web.Response(status=204)


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _truthy_query(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image
    except ImportError:  # pillow is optional for the double
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


def _normalise_route(path: str) -> str:
    """Route template of a path, for rate limit bucket hashes."""
    path = re.sub(r"^/(webhooks|interactions)/(\d+)/[^/]+", r"/\1/{id}/{token}", path)
    return re.sub(r"/\d+", "/{id}", path)


class DiscordDouble:
    """A loopback Discord server holding a small world and everything the bot did in it.

    Default world: guild :attr:`guild` ("Atelier Test") with :attr:`channel`
    (#general) and :attr:`nsfw_channel` (#nsfw, nsfw); members :attr:`alice`,
    :attr:`bob`, :attr:`mod` (Moderator role with MANAGE_MESSAGES) and the owner
    :attr:`owner`; guild :attr:`other_guild` ("Elsewhere") with
    :attr:`other_channel` and :attr:`eve`. The bot (:attr:`bot_user`) is a member
    of both guilds.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval: int = 41250,
        attachment_size_limit: int = 25 * MiB,
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.attachment_size_limit = attachment_size_limit
        self.upload_limit: int | None = None  # total bytes per request; see reject_uploads_over

        self.users: dict[int, Member] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self._dm_channels: dict[int, Channel] = {}
        self._build_default_world()

        self._messages: dict[int, Message] = {}
        self._attachments: dict[int, Attachment] = {}
        self.interactions: list[InteractionHandle] = []
        self._interactions: dict[int, InteractionHandle] = {}
        self._by_token: dict[str, InteractionHandle] = {}
        # custom_id -> (modal payload, the interaction that opened it)
        self.modals: dict[str, tuple[dict[str, Any], InteractionHandle]] = {}

        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.sync_count = 0
        self._command_ids: dict[tuple[int | None, int, str], int] = {}

        self.requests: list[RequestRecord] = []
        self.unhandled: list[tuple[str, str]] = []
        self.server_errors: list[BaseException] = []  # bugs in the double itself
        self.faults: list[Fault] = []
        self._nonces: dict[tuple[int, str], tuple[int, float]] = {}  # → (message id, when)

        # OAuth2 (the authorization-code grant a website signs people in with).
        self.client_secret = DEFAULT_CLIENT_SECRET
        self.oauth_user: Member | None = None  # who is signed in to Discord in "the browser"
        self.oauth_denies = False  # the person presses Cancel on the authorization page
        self.oauth_expires_in = 604800
        self.authorizations: list[dict[str, str]] = []  # query of every authorization page
        self._oauth_codes: dict[str, OAuthGrant] = {}
        self._oauth_access: dict[str, OAuthGrant] = {}
        self._oauth_refresh: dict[str, OAuthGrant] = {}

        self.gateway = Gateway(self, heartbeat_interval)
        self._changed = asyncio.Event()
        self._version = 0
        self._runner: web.AppRunner | None = None

    # ================================================================== world

    def _build_default_world(self) -> None:
        self.application_id = APPLICATION_ID
        self.bot_user = self._user(BOT_USER_ID, "Atelier", bot=True)
        self.owner = self._user(OWNER_ID, "olive", global_name="Olive")
        self.alice = self._user(ALICE_ID, "alice", global_name="Alice")
        self.bob = self._user(BOB_ID, "bob", global_name="Bob")
        self.mod = self._user(MOD_ID, "morgan", global_name="Morgan (mod)")
        self.eve = self._user(EVE_ID, "eve", global_name="Eve")

        self.guild = Guild(
            id=GUILD_ID,
            name="Atelier Test",
            owner_id=self.owner.id,
            roles=[
                Role(GUILD_ID, "@everyone", DEFAULT_EVERYONE_PERMISSIONS, 0),
                Role(
                    MOD_ROLE_ID,
                    "Moderator",
                    Perm.MANAGE_MESSAGES | Perm.KICK_MEMBERS | Perm.MANAGE_ROLES,
                    1,
                ),
                Role(BOT_ROLE_ID, "Atelier", DEFAULT_BOT_PERMISSIONS, 2, True, BOT_USER_ID),
            ],
        )
        self.channel = self._add_channel(self.guild, GENERAL_CHANNEL_ID, "general")
        self.nsfw_channel = self._add_channel(self.guild, NSFW_CHANNEL_ID, "nsfw", nsfw=True)
        for member, roles in (
            (self.owner, []),
            (self.alice, []),
            (self.bob, []),
            (self.mod, [MOD_ROLE_ID]),
            (self.bot_user, [BOT_ROLE_ID]),
        ):
            self._join(self.guild, member, roles)

        self.other_guild = Guild(
            id=OTHER_GUILD_ID,
            name="Elsewhere",
            owner_id=self.eve.id,
            roles=[
                Role(OTHER_GUILD_ID, "@everyone", DEFAULT_EVERYONE_PERMISSIONS, 0),
                Role(OTHER_BOT_ROLE_ID, "Atelier", DEFAULT_BOT_PERMISSIONS, 1, True, BOT_USER_ID),
            ],
        )
        self.other_channel = self._add_channel(self.other_guild, OTHER_CHANNEL_ID, "lounge")
        self._join(self.other_guild, self.eve, [])
        self._join(self.other_guild, self.bot_user, [OTHER_BOT_ROLE_ID])

        for guild in (self.guild, self.other_guild):
            self.guilds[guild.id] = guild

    def _user(self, user_id: int, name: str, **kwargs: Any) -> Member:
        member = Member(id=user_id, name=name, **kwargs)
        self.users[user_id] = member
        return member

    def _add_channel(self, guild: Guild, channel_id: int, name: str, **kwargs: Any) -> Channel:
        channel = Channel(
            id=channel_id, name=name, guild_id=guild.id, position=len(guild.channels), **kwargs
        )
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        return channel

    @staticmethod
    def _join(guild: Guild, member: Member, role_ids: list[int]) -> None:
        if not guild.has_member(member):
            guild.members.append(member)
        member.roles[guild.id] = list(role_ids)

    def add_member(
        self,
        name: str,
        *,
        guild: Guild | None = None,
        roles: Iterable[Role] = (),
        global_name: str | None = None,
    ) -> Member:
        """A new user, member of ``guild`` (default: :attr:`guild`)."""
        member = self._user(next_snowflake(), name, global_name=global_name)
        self._join(guild or self.guild, member, [r.id for r in roles])
        self._bump()
        return member

    async def add_guild(
        self,
        name: str,
        *,
        channels: Iterable[str] = ("general",),
        members: Iterable[Member] = (),
        with_bot: bool = True,
    ) -> Guild:
        """Create a guild; the bot receives GUILD_CREATE when it is a member and connected."""
        guild_id = next_snowflake()
        guild = Guild(
            id=guild_id,
            name=name,
            owner_id=self.owner.id,
            roles=[Role(guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS, 0)],
        )
        for channel_name in channels:
            self._add_channel(guild, next_snowflake(), channel_name)
        self._join(guild, self.owner, [])
        for member in members:
            self._join(guild, member, [])
        if with_bot:
            bot_role = Role(
                next_snowflake(), "Atelier", DEFAULT_BOT_PERMISSIONS, 1, True, self.bot_user.id
            )
            guild.roles.append(bot_role)
            self._join(guild, self.bot_user, [bot_role.id])
        self.guilds[guild.id] = guild
        if with_bot:
            await self.gateway.dispatch("GUILD_CREATE", guild.to_dict(), required=False)
        self._bump()
        return guild

    def bot_guilds(self) -> list[Guild]:
        return [g for g in self.guilds.values() if g.has_member(self.bot_user)]

    def dm_channel(self, member: Member) -> Channel:
        """The DM channel (type 1) between the bot and ``member``."""
        channel = self._dm_channels.get(member.id)
        if channel is None:
            channel = Channel(id=next_snowflake(), name=f"@{member.name}", type=1, recipient=member)
            self._dm_channels[member.id] = channel
            self.channels[channel.id] = channel
        return channel

    def guild_of(self, channel: Channel | int) -> Guild | None:
        channel = self._channel(channel)
        return self.guilds.get(channel.guild_id) if channel.guild_id else None

    def set_permission_overwrite(
        self, channel: Channel, target: Member | Role, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Set a channel overwrite (e.g. deny the bot SEND_MESSAGES in #general)."""
        kind = 1 if isinstance(target, Member) else 0
        channel.overwrites[target.id] = (int(allow), int(deny), kind)
        guild = self.guild_of(channel)
        if guild is not None:
            asyncio.ensure_future(
                self.gateway.dispatch("CHANNEL_UPDATE", channel.to_dict(), required=False)
            )
        self._bump()

    async def add_channel(
        self,
        name: str,
        *,
        guild: Guild | None = None,
        nsfw: bool = False,
        viewers: Iterable[Member | Role] | None = None,
    ) -> Channel:
        """A new text channel in ``guild`` (default: :attr:`guild`); the bot gets CHANNEL_CREATE.

        With ``viewers`` it is private, as Discord's "Private Channel" switch makes it:
        @everyone is denied VIEW_CHANNEL and only these members or roles, and the bot, are
        allowed it.
        """
        guild = guild or self.guild
        channel = self._add_channel(guild, next_snowflake(), name, nsfw=nsfw)
        if viewers is not None:
            view = int(Perm.VIEW_CHANNEL)
            channel.overwrites[guild.id] = (0, view, 0)
            for target in (*viewers, self.bot_user):
                channel.overwrites[target.id] = (view, 0, 1 if isinstance(target, Member) else 0)
        await self.gateway.dispatch("CHANNEL_CREATE", channel.to_dict(), required=False)
        self._bump()
        return channel

    def leave(self, guild: Guild, member: Member) -> None:
        """``member`` leaves ``guild`` (the bot, without the members intent, is not told)."""
        guild.members = [m for m in guild.members if m.id != member.id]
        member.roles.pop(guild.id, None)
        self._bump()

    # ================================================================== OAuth2

    @property
    def oauth_url(self) -> str:
        """Discord's authorization page (``DISCORD_OAUTH_URL``)."""
        return f"{self.http_base}/oauth2/authorize"

    def revoke_oauth(self, user: Member) -> None:
        """The user deauthorizes the application: their tokens stop working."""
        for tokens in (self._oauth_access, self._oauth_refresh, self._oauth_codes):
            for token in [t for t, grant in tokens.items() if grant.user is user]:
                del tokens[token]

    def expire_oauth_access(self, user: Member) -> None:
        """The user's access tokens expire; their refresh tokens still work."""
        for token in [t for t, grant in self._oauth_access.items() if grant.user is user]:
            del self._oauth_access[token]

    def _oauth_grant(self, request: web.Request) -> OAuthGrant | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        return self._oauth_access.get(header[len("Bearer "):])

    async def _authorize(self, request: web.Request) -> web.Response:
        """The authorization page: approves at once for :attr:`oauth_user` (or cancels)."""
        query = dict(request.query)
        self.authorizations.append(query)
        scopes = frozenset(query.get("scope", "").split())
        redirect_uri = query.get("redirect_uri", "")
        problems = []
        if query.get("response_type") != "code":
            problems.append("response_type must be code")
        if query.get("client_id") != str(self.application_id):
            problems.append("unknown client_id")
        if not scopes or not scopes <= OAUTH_SCOPES:
            problems.append(f"invalid scope {query.get('scope')!r}")
        if not redirect_uri.startswith(("http://", "https://")):
            problems.append("invalid redirect_uri")
        if problems:
            return web.Response(status=400, text="Invalid OAuth2 request: " + "; ".join(problems))
        state = {"state": query["state"]} if "state" in query else {}
        if self.oauth_denies:
            target = _with_query(redirect_uri, error="access_denied",
                                 error_description="The resource owner denied the request",
                                 **state)
            return web.Response(status=302, headers={"Location": target})
        if self.oauth_user is None:
            return web.Response(status=401, text="Log in to Discord to continue")
        code = secrets.token_urlsafe(20)
        self._oauth_codes[code] = OAuthGrant(self.oauth_user, scopes, redirect_uri)
        self._bump()
        return web.Response(status=302,
                            headers={"Location": _with_query(redirect_uri, code=code, **state)})

    def _oauth_client_ok(self, request: web.Request, form: Mapping[str, Any]) -> bool:
        """Whether the application authenticated (HTTP Basic, or id and secret in the form)."""
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                client_id, _, secret = (
                    base64.b64decode(header[len("Basic "):]).decode().partition(":"))
            except ValueError:
                return False
        return client_id == str(self.application_id) and secret == self.client_secret

    async def _oauth_revoke(self, request: web.Request) -> web.Response:
        """``POST /oauth2/token/revoke``: the token, and every token of its grant, end."""
        form = await request.post()
        if not self._oauth_client_ok(request, form):
            return _json({"error": "invalid_client"}, 401)
        token = str(form.get("token", ""))
        grant = self._oauth_access.get(token) or self._oauth_refresh.get(token)
        for tokens in (self._oauth_access, self._oauth_refresh):
            for key in [t for t, g in tokens.items() if g is grant]:
                del tokens[key]
        self._bump()
        return _json({})

    async def _oauth_token(self, request: web.Request) -> web.Response:
        """``POST /oauth2/token``: codes and refresh tokens for access tokens."""
        form = await request.post()
        if not self._oauth_client_ok(request, form):
            return _json({"error": "invalid_client"}, 401)
        grant_type = form.get("grant_type")
        grant: OAuthGrant | None
        if grant_type == "authorization_code":
            grant = self._oauth_codes.pop(str(form.get("code", "")), None)  # used once
            if grant is not None and form.get("redirect_uri") != grant.redirect_uri:
                grant = None
        elif grant_type == "refresh_token":
            grant = self._oauth_refresh.pop(str(form.get("refresh_token", "")), None)
        else:
            return _json({"error": "unsupported_grant_type"}, 400)
        if grant is None:
            return _json({"error": "invalid_grant"}, 400)
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self._oauth_access[access] = grant
        self._oauth_refresh[refresh] = grant
        return _json({"access_token": access, "token_type": "Bearer",
                      "expires_in": self.oauth_expires_in, "refresh_token": refresh,
                      "scope": " ".join(sorted(grant.scopes))})

    async def _my_guilds(self, request: web.Request) -> web.Response:
        """``GET /users/@me/guilds``: the bot's guilds with the bot token, a person's with a
        Bearer token (``guilds`` scope); partial guilds, by id, ``limit`` (at most 200) after
        ``after``."""
        if request.headers.get("Authorization") == f"Bot {self.token}":
            user = self.bot_user
        else:
            grant = self._oauth_grant(request)
            if grant is None or "guilds" not in grant.scopes:
                raise ApiError(401, 0, "401: Unauthorized")
            user = grant.user
        limit = min(200, max(1, _as_int(request.query.get("limit")) or 200))
        after = _as_int(request.query.get("after")) or 0
        guilds = sorted((g for g in self.guilds.values()
                         if g.has_member(user) and g.id > after), key=lambda g: g.id)
        return _json([
            {"id": str(g.id), "name": g.name, "icon": None, "banner": None,
             "owner": g.owner_id == user.id,
             "permissions": str(g.base_permissions(user)), "features": []}
            for g in guilds[:limit]
        ])

    async def add_thread(
        self,
        parent: Channel,
        name: str,
        *,
        owner: Member | None = None,
        private: bool = False,
        members: Iterable[Member] = (),
    ) -> Channel:
        """A thread of the text channel ``parent`` started by ``owner`` (default
        :attr:`alice`); the bot gets THREAD_CREATE. A private thread is seen by its
        ``members`` (the owner and the bot among them) and those who may manage threads."""
        guild = self.guild_of(parent)
        assert guild is not None and not parent.is_thread, "threads start in guild channels"
        owner = owner or self.alice
        thread = Channel(
            id=next_snowflake(),
            name=name,
            type=PRIVATE_THREAD if private else PUBLIC_THREAD,
            guild_id=guild.id,
            nsfw=parent.nsfw,
            parent_id=parent.id,
            owner_id=owner.id,
            thread_members={owner.id, self.bot_user.id, *(m.id for m in members)},
        )
        guild.threads.append(thread)
        self.channels[thread.id] = thread
        payload = {**thread.to_dict(), "newly_created": True}
        await self.gateway.dispatch("THREAD_CREATE", payload, required=False)
        self._bump()
        return thread

    async def delete_channel(self, channel: Channel) -> None:
        """Delete a guild channel, as a server admin would: its messages go with it, requests
        for it answer 404 Unknown Channel, and the bot gets CHANNEL_DELETE."""
        guild = self.guild_of(channel)
        assert guild is not None, "only guild channels can be deleted"
        guild.channels.remove(channel)
        del self.channels[channel.id]
        for message in self._messages.values():
            if message.channel_id == channel.id:
                message.deleted = True
        await self.gateway.dispatch("CHANNEL_DELETE", channel.to_dict(), required=False)
        self._bump()

    def _channel(self, channel: Channel | int) -> Channel:
        if isinstance(channel, Channel):
            return channel
        try:
            return self.channels[int(channel)]
        except KeyError:
            raise KeyError(f"the double has no channel {channel}") from None

    # ================================================================== lifecycle

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        """Settings for a bot process pointed at the double."""
        return {
            "DISCORD_TOKEN": self.token,
            "DISCORD_API_BASE": self.api_base,
            "DISCORD_GATEWAY_URL": self.gateway_url,
            "DISCORD_APPLICATION_ID": str(self.application_id),
        }

    async def start(self) -> DiscordDouble:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 30)
        self._add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ================================================================== waiting

    def _bump(self) -> None:
        """Wake every waiter: something changed."""
        self._version += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 10.0,
        *,
        description: str | None = None,
    ) -> Any:
        """Re-evaluate ``predicate`` after every change; return its first truthy value.

        Exceptions raised by the predicate count as "not yet" (so
        ``lambda: double.messages[-1].content == "done"`` is fine); the last one is
        reported if the wait times out. The predicate is also re-checked every
        50 ms, so it may look at state outside the double (the bot's, say).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: BaseException | None = None
        while True:
            event = self._changed
            try:
                value = predicate()
            except Exception as exc:
                value, last_error = None, exc
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    self._timeout_report(predicate, description, timeout, last_error)
                )
            try:
                await asyncio.wait_for(event.wait(), min(remaining, POLL_INTERVAL))
            except TimeoutError:
                pass

    def _timeout_report(
        self,
        predicate: Callable[[], Any],
        description: str | None,
        timeout: float,
        last_error: BaseException | None,
    ) -> str:
        if description is None:
            try:
                description = inspect.getsource(predicate).strip()
            except (OSError, TypeError):
                description = repr(predicate)
        lines = [f"timed out after {timeout:g}s waiting for {description[:300]}"]
        if last_error is not None:
            lines.append(f"  the predicate last raised {last_error!r}")
        lines.append(
            f"  gateway: {'connected' if self.gateway.connected else 'NOT connected'}, "
            f"READY sent {self.gateway.ready_count}x, commands synced {self.sync_count}x"
        )
        for msg in self.messages[-5:]:
            lines.append(f"  message: {msg!r}")
        for handle in self.interactions[-3:]:
            answered = [c.type for c in handle.callbacks]
            lines.append(f"  interaction: {handle!r} callbacks={answered}")
        for record in self.requests[-8:]:
            lines.append(f"  request: {record.method} {record.path} -> {record.status}")
        if self.unhandled:
            lines.append(f"  unhandled routes: {self.unhandled[-5:]}")
        if self.server_errors:
            lines.append(f"  errors inside the double: {self.server_errors[-3:]!r}")
        return "\n".join(lines)

    async def wait_ready(self, timeout: float = 10.0, *, count: int = 1) -> None:
        """Wait until a bot is connected and READY went out ``count`` times in all."""
        await self.wait_for(
            lambda: self.gateway.connected and self.gateway.ready_count >= count,
            timeout,
            description=f"the bot to connect (IDENTIFY -> READY #{count})",
        )

    async def wait_for_commands(self, timeout: float = 10.0, *, count: int = 1) -> None:
        """Wait until the bot synced its application commands ``count`` times."""
        await self.wait_for(
            lambda: self.sync_count >= count,
            timeout,
            description=f"command sync #{count} (PUT .../commands)",
        )

    def disconnect_gateway(self, code: int = 4000) -> asyncio.Future[None]:
        """Close the bot's websocket; with 4000 it may RESUME. Awaiting is optional."""
        return asyncio.ensure_future(self.gateway.disconnect(code))

    # ================================================================== records

    @property
    def messages(self) -> list[Message]:
        """Every stored message, oldest first (deleted and ephemeral ones included)."""
        return list(self._messages.values())

    def message(self, message_id: int) -> Message:
        try:
            return self._messages[int(message_id)]
        except KeyError:
            raise KeyError(f"the double stores no message {message_id}") from None

    def channel_messages(
        self,
        channel: Channel | int,
        *,
        include_deleted: bool = False,
        include_ephemeral: bool = True,
    ) -> list[Message]:
        channel_id = channel.id if isinstance(channel, Channel) else int(channel)
        return [
            m
            for m in self._messages.values()
            if m.channel_id == channel_id
            and (include_deleted or not m.deleted)
            and (include_ephemeral or not m.ephemeral)
        ]

    def expire(self, handle: InteractionHandle) -> None:
        """Make ``handle``'s token invalid, as after 15 minutes (or 3 s unanswered)."""
        handle.expired = True
        self._bump()

    def fail(
        self,
        method: str | None,
        path_regex: str,
        status: int | None = 500,
        times: int | None = 1,
        retry_after: float | None = None,
        delay: float | None = None,
        body: Any = None,
        hold: bool = False,
        late_answer: bool = False,
    ) -> Fault:
        """Make the next ``times`` requests matching ``method`` and ``path_regex`` fail.

        ``path_regex`` is searched in the path relative to the API base
        (``/channels/123/messages``; attachment downloads are ``/attachments/...``).
        ``status=None`` with ``delay`` only stalls the request; with ``hold`` it
        stalls until ``fault.release()`` (or ``cancel()``); with ``late_answer`` too, the
        request is carried out first and only its answer is late (a client that gives up or
        dies meanwhile never learns that it happened). ``times=None`` keeps failing until
        ``fault.cancel()``.
        """
        if status == 429 and retry_after is None:
            retry_after = 0.1
        fault = Fault(
            method=method,
            pattern=re.compile(path_regex),
            status=status,
            times=times,
            retry_after=retry_after,
            delay=delay,
            body=body,
            gate=asyncio.Event() if hold else None,
            late_answer=late_answer,
        )
        self.faults.append(fault)
        return fault

    def reject_uploads_over(self, n_bytes: int | None) -> None:
        """Answer 413 to message creates/edits whose files exceed ``n_bytes`` in total."""
        self.upload_limit = n_bytes

    # ================================================================== driving interactions

    async def slash(
        self,
        name: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        user: Member | None = None,
        channel: Channel | int | None = None,
        attachments: Mapping[str, FileSpec] | None = None,
    ) -> InteractionHandle:
        """A user runs ``/name``; returns as soon as INTERACTION_CREATE went out."""
        chan = self._channel(channel if channel is not None else self.channel)
        command, guild_id = self._find_command(name, 1, chan)
        built, resolved = self._build_options(command, options or {}, attachments or {}, chan)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1}
        if built:
            data["options"] = built
        if resolved:
            data["resolved"] = resolved
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return await self._interact(APPLICATION_COMMAND, data, user, chan, name=name)

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        focused: str,
        user: Member | None = None,
        channel: Channel | int | None = None,
        timeout: float = 10.0,
    ) -> list[dict[str, Any]]:
        """A user types into option ``focused``; returns the choices the bot offered."""
        chan = self._channel(channel if channel is not None else self.channel)
        command, guild_id = self._find_command(name, 1, chan)
        values = dict(options or {})
        values.setdefault(focused, "")
        built, resolved = self._build_options(command, values, {}, chan, focused=focused)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": built}
        if resolved:
            data["resolved"] = resolved
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        handle = await self._interact(AUTOCOMPLETE, data, user, chan, name=name)
        response = await handle.response(timeout)
        if response.type != 8:
            raise AssertionError(f"autocomplete answered with callback type {response.type}")
        return list(response.data.get("choices", []))

    async def context_menu(
        self,
        name: str,
        target: Message | Member,
        *,
        user: Member | None = None,
        channel: Channel | int | None = None,
    ) -> InteractionHandle:
        """A user picks Apps > ``name`` on a message (type 3) or a user (type 2)."""
        if isinstance(target, Message):
            chan = self._channel(channel if channel is not None else target.channel_id)
            command, guild_id = self._find_command(name, 3, chan)
            data: dict[str, Any] = {
                "id": command["id"],
                "name": name,
                "type": 3,
                "target_id": str(target.id),
                "resolved": {"messages": {str(target.id): target.to_dict()}},
            }
        else:
            chan = self._channel(channel if channel is not None else self.channel)
            command, guild_id = self._find_command(name, 2, chan)
            data = {
                "id": command["id"],
                "name": name,
                "type": 2,
                "target_id": str(target.id),
                "resolved": self._resolve_user(target, chan),
            }
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return await self._interact(APPLICATION_COMMAND, data, user, chan, name=name)

    async def click(
        self,
        message: Message | int,
        custom_id: str,
        *,
        user: Member | None = None,
        force: bool = False,
    ) -> InteractionHandle:
        """A user clicks the button ``custom_id`` on ``message``.

        Raises if the message has no such button or it is disabled (users cannot
        click those); ``force=True`` sends the interaction anyway.
        """
        msg = self._message_arg(message)
        component = msg.find_component(custom_id)
        if not force:
            self._check_clickable(msg, custom_id, component, (2,))
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": 2}
        if component is not None and "id" in component:
            data["id"] = component["id"]
        chan = self._channel(msg.channel_id)
        return await self._interact(MESSAGE_COMPONENT, data, user, chan, message=msg)

    async def select(
        self,
        message: Message | int,
        custom_id: str,
        values: Iterable[Any],
        *,
        user: Member | None = None,
        force: bool = False,
    ) -> InteractionHandle:
        """A user picks ``values`` in the select menu ``custom_id`` on ``message``."""
        msg = self._message_arg(message)
        component = msg.find_component(custom_id)
        picked = [v.id if isinstance(v, Member | Role | Channel) else v for v in values]
        picked = [str(v) for v in picked]
        if not force:
            self._check_clickable(msg, custom_id, component, SELECT_TYPES)
            assert component is not None
            if component.get("type") == 3:
                known = [o.get("value") for o in component.get("options", [])]
                unknown = [v for v in picked if v not in known]
                if unknown:
                    raise ValueError(f"select {custom_id!r} has no options {unknown}; has {known}")
            low, high = component.get("min_values", 1), component.get("max_values", 1)
            if not low <= len(picked) <= high:
                raise ValueError(f"select {custom_id!r} takes {low}..{high} values, not {picked}")
        kind = component.get("type", 3) if component else 3
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": kind, "values": picked}
        if component is not None and "id" in component:
            data["id"] = component["id"]
        chan = self._channel(msg.channel_id)
        if kind in (5, 6, 7, 8):
            data["resolved"] = self._resolve_snowflakes(SELECT_TARGETS[kind], picked, chan)
        return await self._interact(MESSAGE_COMPONENT, data, user, chan, message=msg)

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, Any],
        *,
        user: Member | None = None,
        message: Message | None = None,
        channel: Channel | int | None = None,
    ) -> InteractionHandle:
        """A user fills in and submits the modal ``custom_id`` the bot showed.

        ``values`` maps input custom_ids to text (or to a list for selects). The
        submitted components copy the modal's own layout (action rows or labels).
        """
        shown = self.modals.get(custom_id)
        if shown is None:
            raise LookupError(
                f"the bot never showed a modal {custom_id!r}; shown: {sorted(self.modals)}"
            )
        modal, origin = shown
        components = self._modal_components(modal, dict(values))
        chan = self._channel(channel if channel is not None else origin.channel)
        msg = message if message is not None else origin.message
        data = {"custom_id": custom_id, "components": components}
        return await self._interact(
            MODAL_SUBMIT, data, user or origin.user, chan, message=msg, name=origin.name
        )

    async def post_message(
        self,
        channel: Channel | int,
        content: str = "",
        *,
        user: Member | None = None,
        attachments: Iterable[FileSpec] = (),
    ) -> Message:
        """A user posts a message; MESSAGE_CREATE reaches the bot if its intents ask."""
        chan = self._channel(channel)
        author = user or self.alice
        guild = self.guild_of(chan)
        msg = Message(
            self,
            id=next_snowflake(),
            channel_id=chan.id,
            guild_id=guild.id if guild else None,
            author=author,
            content=content,
            attachments=[self._file_spec_attachment(chan.id, spec) for spec in attachments],
        )
        self._store(msg, chan)
        intent = INTENT_GUILD_MESSAGES if guild else INTENT_DIRECT_MESSAGES
        if self.gateway.wants(intent):
            event = msg.to_dict()
            if guild is not None:
                event["member"] = guild.member_payload(author, with_user=False)
                mentioned = self.bot_user.id in msg.mentioned_user_ids
                if not self.gateway.wants(INTENT_MESSAGE_CONTENT) and not mentioned:
                    # Without the privileged intent Discord blanks other users' messages.
                    event.update(content="", embeds=[], attachments=[], components=[])
            await self.gateway.dispatch("MESSAGE_CREATE", event, required=False)
        return msg

    # -- helpers for driving ----------------------------------------------------

    def _message_arg(self, message: Message | int) -> Message:
        msg = message if isinstance(message, Message) else self.message(message)
        if msg.deleted:
            raise ValueError(f"{msg!r} was deleted; nobody can interact with it")
        return msg

    @staticmethod
    def _check_clickable(
        msg: Message, custom_id: str, component: dict[str, Any] | None, kinds: Iterable[int]
    ) -> None:
        if component is None:
            raise LookupError(
                f"{msg!r} has no component {custom_id!r}; "
                f"buttons: {msg.button_labels}, selects: {[s['custom_id'] for s in msg.selects]}"
            )
        if component.get("type") not in tuple(kinds):
            raise ValueError(f"component {custom_id!r} is of type {component.get('type')}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} on {msg!r} is disabled")

    def _find_command(
        self, name: str, kind: int, channel: Channel
    ) -> tuple[dict[str, Any], int | None]:
        if channel.guild_id is not None:
            for cmd in self.guild_commands.get(channel.guild_id, []):
                if cmd["name"] == name and cmd.get("type", 1) == kind:
                    return cmd, channel.guild_id
        for cmd in self.commands:
            if cmd["name"] == name and cmd.get("type", 1) == kind:
                return cmd, None
        known = [(c["name"], c.get("type", 1)) for c in self.commands]
        guild_known = [
            (c["name"], c.get("type", 1))
            for c in self.guild_commands.get(channel.guild_id or 0, [])
        ]
        raise LookupError(
            f"no command {name!r} of type {kind} was synced for {channel!r} "
            f"(global: {known}, guild: {guild_known}, syncs: {self.sync_count})"
        )

    def _build_options(
        self,
        command: dict[str, Any],
        values: Mapping[str, OptionValue],
        files: Mapping[str, FileSpec],
        channel: Channel,
        *,
        focused: str | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        definitions = command.get("options") or []
        by_name = {o["name"]: o for o in definitions}
        unknown = (set(values) | set(files)) - set(by_name)
        if unknown:
            raise ValueError(
                f"/{command['name']} has no options {sorted(unknown)}; it has {sorted(by_name)}"
            )
        if any(o.get("type") in (1, 2) for o in definitions):
            raise NotImplementedError("the double does not drive subcommands")
        built: list[dict[str, Any]] = []
        resolved: dict[str, Any] = {}
        for definition in definitions:
            name, kind = definition["name"], definition["type"]
            if name not in values and name not in files:
                if definition.get("required") and focused is None:
                    raise ValueError(f"/{command['name']} needs option {name!r}")
                continue
            raw = files[name] if name in files else values[name]
            option: dict[str, Any] = {"name": name, "type": kind}
            if name == focused:
                option["value"] = "" if raw is None else str(raw)
                option["focused"] = True
            else:
                option["value"] = self._option_value(definition, raw, channel, resolved)
            built.append(option)
        return built, resolved

    def _option_value(
        self, definition: dict[str, Any], raw: Any, channel: Channel, resolved: dict[str, Any]
    ) -> Any:
        kind = definition["type"]
        name = definition["name"]
        if kind == 3:
            value: Any = str(raw)
        elif kind == 4:
            value = int(raw)
        elif kind == 5:
            value = bool(raw)
        elif kind == 10:
            value = float(raw)
        elif kind == 11:
            attachment = self._file_spec_attachment(channel.id, raw, ephemeral=True)
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.to_dict()
            return str(attachment.id)
        elif kind in (6, 7, 8, 9):
            target_id = raw.id if isinstance(raw, Member | Role | Channel) else int(raw)
            kinds = OPTION_TARGETS[kind]
            for key, items in self._resolve_snowflakes(kinds, [str(target_id)], channel).items():
                resolved.setdefault(key, {}).update(items)
            return str(target_id)
        else:
            raise NotImplementedError(f"option type {kind} ({name!r}) is not supported")
        choices = definition.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise ValueError(
                f"option {name!r} only accepts {[c['value'] for c in choices]}, not {value!r}"
            )
        return value

    def _resolve_user(self, user: Member, channel: Channel) -> dict[str, Any]:
        resolved: dict[str, Any] = {"users": {str(user.id): user.user_payload()}}
        guild = self.guild_of(channel)
        if guild is not None and guild.has_member(user):
            resolved["members"] = {
                str(user.id): guild.member_payload(user, with_user=False, channel=channel)
            }
        return resolved

    def _resolve_snowflakes(
        self, kinds: frozenset[str], ids: Iterable[str], channel: Channel
    ) -> dict[str, dict[str, Any]]:
        """``resolved`` data for user, role and channel ids (``kinds`` says which apply)."""
        guild = self.guild_of(channel)
        out: dict[str, dict[str, Any]] = {}
        for raw_id in ids:
            target = int(raw_id)
            user = self.users.get(target) if "user" in kinds else None
            role = None
            if "role" in kinds and guild is not None:
                role = next((r for r in guild.roles if r.id == target), None)
            chan = self.channels.get(target) if "channel" in kinds else None
            if user is not None:
                for key, items in self._resolve_user(user, channel).items():
                    out.setdefault(key, {}).update(items)
            elif role is not None:
                out.setdefault("roles", {})[raw_id] = role.to_dict()
            elif chan is not None:
                out.setdefault("channels", {})[raw_id] = {
                    "id": raw_id,
                    "name": chan.name,
                    "type": chan.type,
                    "permissions": str(int(DEFAULT_EVERYONE_PERMISSIONS)),
                    "nsfw": chan.nsfw,
                    "parent_id": None,
                }
            else:
                raise ValueError(f"{raw_id} is no {'/'.join(sorted(kinds))} the double knows")
        return out

    def _modal_components(
        self, modal: dict[str, Any], values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        custom_id = modal.get("custom_id")

        def leaf(component: dict[str, Any]) -> dict[str, Any] | None:
            kind = component.get("type")
            cid = component.get("custom_id")
            if cid is None:
                return None
            out: dict[str, Any] = {"type": kind, "custom_id": cid}
            if "id" in component:
                out["id"] = component["id"]
            if kind == 4:
                out["value"] = str(values.pop(cid, component.get("value") or ""))
            elif kind in SELECT_TYPES:
                picked = values.pop(cid, [])
                out["values"] = [str(v) for v in ([picked] if isinstance(picked, str) else picked)]
            else:
                values.pop(cid, None)
                return None
            return out

        submitted: list[dict[str, Any]] = []
        for component in modal.get("components", []):
            kind = component.get("type")
            if kind == 1:
                leaves = [x for x in map(leaf, component.get("components", [])) if x]
                if leaves:
                    submitted.append({"type": 1, "components": leaves})
            elif kind == 18 and isinstance(component.get("component"), dict):
                inner = leaf(component["component"])
                if inner:
                    wrapped: dict[str, Any] = {"type": 18, "component": inner}
                    if "id" in component:
                        wrapped["id"] = component["id"]
                    submitted.append(wrapped)
        if values:
            raise ValueError(f"modal {custom_id!r} has no inputs {sorted(values)}")
        return submitted

    def _file_spec_attachment(
        self, channel_id: int, spec: FileSpec, *, ephemeral: bool = False
    ) -> Attachment:
        if isinstance(spec, Attachment):
            if spec.id not in self._attachments:
                self._attachments[spec.id] = spec
            return spec
        filename, data, *rest = spec
        return self._store_attachment(
            channel_id, filename, data, rest[0] if rest else None, ephemeral=ephemeral
        )

    async def _interact(
        self,
        kind: int,
        data: dict[str, Any],
        user: Member | None,
        channel: Channel,
        *,
        message: Message | None = None,
        name: str | None = None,
    ) -> InteractionHandle:
        user = user or self.alice
        if self.gateway.current is None:
            raise RuntimeError(
                "no bot is connected to the gateway (start it and await double.wait_ready())"
            )
        guild = self.guild_of(channel)
        if guild is not None and not guild.has_member(user):
            raise ValueError(f"{user!r} is not a member of {guild!r}")
        if guild is not None and not guild.permissions_in(user, channel) & Perm.VIEW_CHANNEL:
            # Discord shows a member nothing of a channel they cannot view, so nothing there
            # can be used by them.
            raise ValueError(f"{user!r} cannot view {channel!r}")
        if guild is None and channel.recipient is not user:
            raise ValueError(f"{user!r} cannot use {channel!r}, a DM with {channel.recipient!r}")
        interaction_id = next_snowflake()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(60)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": token,
            "version": 1,
            "attachment_size_limit": self.attachment_size_limit,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "locale": user.locale,
            "channel": channel.to_dict(),
            "channel_id": str(channel.id),
        }
        if guild is not None:
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.locale, "features": []},
                guild_locale=guild.locale,
                member=guild.member_payload(user, channel=channel),
                app_permissions=str(guild.permissions_in(self.bot_user, channel)),
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
            )
        else:
            payload.update(
                user=user.user_payload(),
                app_permissions=str(int(DEFAULT_BOT_PERMISSIONS)),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = message.to_dict()
        handle = InteractionHandle(
            self,
            id=interaction_id,
            token=token,
            type=kind,
            payload=payload,
            user=user,
            channel=channel,
            guild=guild,
            message=message,
            name=name,
        )
        self.interactions.append(handle)
        self._interactions[interaction_id] = handle
        self._by_token[token] = handle
        # Taken just before sending, so acked_at - sent_at never undercounts.
        handle.sent_at = time.monotonic()
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        self._bump()
        return handle

    # ================================================================== HTTP plumbing

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        api = API_PREFIX
        routes: list[tuple[str, str, Callable[[web.Request], Any]]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/@me/guilds", self._my_guilds),
            ("POST", "/oauth2/token", self._oauth_token),
            ("POST", "/oauth2/token/revoke", self._oauth_revoke),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/applications/{app_id}/commands", self._list_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("POST", "/applications/{app_id}/commands", self._upsert_command),
            ("GET", "/applications/{app_id}/commands/{command_id}", self._get_command),
            ("PATCH", "/applications/{app_id}/commands/{command_id}", self._edit_command),
            ("DELETE", "/applications/{app_id}/commands/{command_id}", self._delete_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._list_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self._upsert_command),
            (
                "GET",
                "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
                self._get_command,
            ),
            (
                "PATCH",
                "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
                self._edit_command,
            ),
            (
                "DELETE",
                "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
                self._delete_command,
            ),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app_id}/{token}", self._webhook_execute),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_get),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_edit),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_delete),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._list_messages),
            ("POST", "/channels/{channel_id}/messages", self._create_channel_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_channel_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_channel_message),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}",
                self._delete_channel_message,
            ),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._add_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._remove_reaction,
            ),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
        ]
        for method, path, handler in routes:
            router.add_route(method, api + path, handler)
        router.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        router.add_route("GET", "/oauth2/authorize", self._authorize)
        router.add_route("GET", "/", self.gateway.handle)
        router.add_route("GET", "/gateway", self.gateway.handle)
        router.add_route("*", "/{tail:.*}", self._unknown_route)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if request.path in ("/", "/gateway"):
            return await handler(request)  # the websocket is not a REST request
        arrived = time.monotonic()
        request[ARRIVED] = arrived
        is_api = request.path.startswith(API_PREFIX + "/")
        path = request.path[len(API_PREFIX) :] if is_api else request.path
        response: web.StreamResponse | None = None
        try:
            fault = next((f for f in self.faults if f.matches(request.method, path)), None)
            if fault is not None:
                fault.hits += 1
                if not fault.late_answer:
                    response = await self._fault_response(fault, request.method, path)
            if response is None:
                if is_api:
                    self._check_auth(request, path)
                response = await handler(request)
            if fault is not None and fault.late_answer and fault.delay:
                await asyncio.sleep(fault.delay)
        except ApiError as error:
            headers = {**self._ratelimit_headers(request.method, path), **error.headers}
            response = _json(error.body(), error.status, headers)
        except web.HTTPException as error:
            response = _json(
                {"message": f"{error.status}: {error.reason}", "code": 0}, error.status
            )
        except Exception as error:  # a bug in the double: report it loudly
            log.exception("error inside the Discord double on %s %s", request.method, path)
            self.server_errors.append(error)
            response = _json({"message": "500: Internal Server Error", "code": 0}, 500)
        assert response is not None
        if is_api and "X-RateLimit-Limit" not in response.headers:
            response.headers.update(self._ratelimit_headers(request.method, path))
        self.requests.append(RequestRecord(request.method, path, response.status, arrived))
        self._bump()
        return response

    async def _fault_response(
        self, fault: Fault, method: str, path: str
    ) -> web.StreamResponse | None:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.gate is not None:
            await fault.gate.wait()
        status = fault.status
        if status is None:
            return None
        headers = self._ratelimit_headers(method, path)
        if status == 429:
            retry_after = float(fault.retry_after or 0.1)
            headers.update(
                {
                    "Retry-After": str(max(1, int(retry_after + 0.999))),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                    "X-RateLimit-Scope": "user",
                    # discord.py treats a 429 without Via as a Cloudflare ban.
                    "Via": "1.1 google",
                }
            )
            body = fault.body or {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": False,
                "code": 0,
            }
        elif fault.body is not None:
            body = fault.body
        else:
            reason = {
                500: "Internal Server Error",
                502: "Bad Gateway",
                503: "Service Unavailable",
                504: "Gateway Timeout",
            }
            body = {"message": f"{status}: {reason.get(status, 'Error')}", "code": 0}
        if isinstance(body, str | bytes):
            return web.Response(body=body, status=status, headers=headers, content_type="text/html")
        return _json(body, status, headers)

    @staticmethod
    def _ratelimit_headers(method: str, path: str) -> dict[str, str]:
        bucket = hashlib.sha1(f"{method} {_normalise_route(path)}".encode()).hexdigest()[:32]
        return {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": bucket,
        }

    def _check_auth(self, request: web.Request, path: str) -> None:
        header = request.headers.get("Authorization")
        token_route = path.startswith(("/webhooks/", "/interactions/"))
        if token_route and header is None:
            return  # interaction webhooks authenticate with the token in the path
        if path in ("/oauth2/token", "/oauth2/token/revoke"):
            return  # the application authenticates with its client id and secret
        if path in BEARER_ROUTES and header is not None and header.startswith("Bearer "):
            if self._oauth_grant(request) is None:
                raise ApiError(401, 0, "401: Unauthorized")
            return
        if header != f"Bot {self.token}":
            raise ApiError(401, 0, "401: Unauthorized")

    async def _unknown_route(self, request: web.Request) -> web.Response:
        path = request.path
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX) :]
        self.unhandled.append((request.method, path))
        raise ApiError(404, 0, "404: Not Found")

    async def _read_body(self, request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
        """JSON body, or multipart ``payload_json`` plus ``files[n]`` parts."""
        uploads: list[Upload] = []
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            reader = await request.multipart()
            async for part in reader:
                name = getattr(part, "name", None)
                if name is None or not hasattr(part, "read"):
                    continue
                if name == "payload_json":
                    payload = json.loads(await part.text())
                    continue
                match = re.fullmatch(r"files\[(\d+)\]|file(\d*)", name)
                if match is None:
                    continue
                index = int(match.group(1) or match.group(2) or len(uploads))
                data = bytes(await part.read(decode=False))
                uploads.append(
                    Upload(
                        index=index,
                        filename=part.filename or f"file{index}",
                        data=data,
                        content_type=part.headers.get("Content-Type"),
                    )
                )
            return payload, sorted(uploads, key=lambda u: u.index)
        raw = await request.read()
        if not raw:
            return {}, uploads
        try:
            payload = json.loads(raw)
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        if not isinstance(payload, dict):
            raise ApiError(400, 50035, "Invalid Form Body")
        return payload, uploads

    # ================================================================== attachments

    def _store_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> Attachment:
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or content_type
        attachment_id = next_snowflake()
        size = None
        if content_type and content_type.startswith("image/"):
            size = _image_size(data)
        attachment = Attachment(
            filename=filename,
            data=data,
            content_type=content_type,
            id=attachment_id,
            size=len(data),
            description=description,
            width=size[0] if size else None,
            height=size[1] if size else None,
            url=f"{self.http_base}/attachments/{channel_id}/{attachment_id}/{quote(filename)}",
            ephemeral=ephemeral,
        )
        self._attachments[attachment_id] = attachment
        return attachment

    def _check_upload_sizes(self, uploads: list[Upload]) -> None:
        too_large = ApiError(413, 40005, "Request entity too large")
        if any(len(u.data) > self.attachment_size_limit for u in uploads):
            raise too_large
        if self.upload_limit is not None and sum(len(u.data) for u in uploads) > self.upload_limit:
            raise too_large

    def _build_attachments(
        self,
        channel_id: int,
        payload: dict[str, Any],
        uploads: list[Upload],
        existing: list[Attachment],
        *,
        ephemeral: bool,
    ) -> list[Attachment]:
        """The attachments a create/edit leaves on a message, as Discord computes them.

        Listed existing attachments (by id) stay, unlisted ones go; uploaded
        ``files[n]`` are added, described by the ``attachments`` entry with id n.
        Without an ``attachments`` key existing attachments stay and files are added.
        """
        entries = payload.get("attachments")
        existing_by_id = {a.id: a for a in existing}
        upload_indexes = {u.index for u in uploads}
        described: dict[int, dict[str, Any]] = {}
        kept: list[Attachment] = []
        if entries is None:
            kept = list(existing)
        else:
            for position, entry in enumerate(entries):
                entry_id = _as_int(entry.get("id")) if isinstance(entry, dict) else None
                if entry_id is not None and entry_id in existing_by_id:
                    kept.append(existing_by_id[entry_id])
                elif entry_id is not None and entry_id in upload_indexes:
                    described[entry_id] = entry
                else:
                    raise form_error(
                        f"attachments.{position}.id",
                        "ATTACHMENT_NOT_FOUND",
                        f"Unknown attachment {entry!r}",
                    )
        added = []
        for upload in uploads:
            entry = described.get(upload.index, {})
            added.append(
                self._store_attachment(
                    channel_id,
                    entry.get("filename") or upload.filename,
                    upload.data,
                    upload.content_type,
                    description=entry.get("description"),
                    ephemeral=ephemeral,
                )
            )
        return kept + added

    # ================================================================== message validation

    @staticmethod
    def _normalise_components(components: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """A copy with Discord's numeric component ids filled in."""
        result = copy.deepcopy(components or [])
        used = {c["id"] for c in walk_components(result) if isinstance(c.get("id"), int)}
        counter = 1
        for component in walk_components(result):
            if "id" not in component:
                while counter in used:
                    counter += 1
                component["id"] = counter
                used.add(counter)
        return result

    @staticmethod
    def _validate_message(
        *,
        content: str,
        embeds: list[dict[str, Any]],
        components: list[dict[str, Any]],
        attachments: int,
        flags: int,
        extra: bool = False,
    ) -> None:
        """Discord's limits on message bodies (the ones bots commonly trip over)."""
        if len(content) > 2000:
            raise form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        if len(embeds) > 10:
            raise form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for i, embed in enumerate(embeds):
            limits = {"title": 256, "description": 4096}
            for key, limit in limits.items():
                value = embed.get(key) or ""
                total += len(value)
                if len(value) > limit:
                    raise form_error(
                        f"embeds.{i}.{key}",
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {limit} or fewer in length.",
                    )
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise form_error(
                    f"embeds.{i}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
            for j, fld in enumerate(fields):
                total += len(fld.get("name") or "") + len(fld.get("value") or "")
                if len(fld.get("name") or "") > 256 or len(fld.get("value") or "") > 1024:
                    raise form_error(
                        f"embeds.{i}.fields.{j}", "BASE_TYPE_MAX_LENGTH", "Field too long."
                    )
            total += len((embed.get("footer") or {}).get("text") or "")
            total += len((embed.get("author") or {}).get("name") or "")
        if total > 6000:
            raise form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size")
        if attachments > 10:
            raise form_error(
                "attachments", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
            )
        v2 = bool(flags & FLAG_COMPONENTS_V2)
        if v2 and (content or embeds):
            raise form_error(
                "content", "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2", "Invalid field"
            )
        if not v2:
            if len(components) > 5:
                raise form_error(
                    "components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
                )
            for i, row in enumerate(components):
                children = row.get("components", [])
                if row.get("type") != 1 or not 1 <= len(children) <= 5:
                    raise form_error(
                        f"components.{i}", "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "Invalid action row"
                    )
                if any(c.get("type") in SELECT_TYPES for c in children) and len(children) > 1:
                    raise form_error(
                        f"components.{i}", "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "Select not alone"
                    )
        seen: set[str] = set()
        for component in walk_components(components):
            cid = component.get("custom_id")
            kind = component.get("type")
            if cid is not None:
                if len(cid) > 100:
                    raise form_error(
                        "components", "BASE_TYPE_MAX_LENGTH", "custom_id over 100 characters"
                    )
                if cid in seen:
                    raise form_error(
                        "components", "COMPONENT_CUSTOM_ID_DUPLICATED", f"Duplicate {cid!r}"
                    )
                seen.add(cid)
            if kind == 2:
                if len(component.get("label") or "") > 80:
                    raise form_error("components", "BASE_TYPE_MAX_LENGTH", "label over 80")
                link = component.get("style") == 5
                if link and not component.get("url"):
                    raise form_error("components", "BUTTON_URL_REQUIRED", "Link needs a url")
                if component.get("style") not in (5, 6) and cid is None:
                    raise form_error("components", "BUTTON_CUSTOM_ID_REQUIRED", "custom_id needed")
            if kind == 3:
                options = component.get("options") or []
                if not 1 <= len(options) <= 25:
                    raise form_error("components", "BASE_TYPE_BAD_LENGTH", "1 to 25 options")
        if not (content or embeds or attachments or components or extra):
            raise ApiError(400, 50006, "Cannot send an empty message")

    @staticmethod
    def _resolve_embed_attachments(
        embeds: list[dict[str, Any]], attachments: list[Attachment]
    ) -> list[dict[str, Any]]:
        """Replace ``attachment://name`` urls in embeds with the attachment's url."""
        by_name = {a.filename: a.url for a in attachments}
        result = copy.deepcopy(embeds)
        for embed in result:
            for key in ("image", "thumbnail", "footer", "author"):
                part = embed.get(key)
                if not isinstance(part, dict):
                    continue
                for url_key in ("url", "icon_url"):
                    url = part.get(url_key)
                    if isinstance(url, str) and url.startswith("attachment://"):
                        resolved = by_name.get(url[len("attachment://") :])
                        if resolved:
                            part[url_key] = resolved
                            part["proxy_url"] = resolved
        return result

    # ================================================================== message store

    def _store(self, msg: Message, channel: Channel) -> None:
        self._messages[msg.id] = msg
        if not msg.ephemeral:
            channel.last_message_id = msg.id
        self._bump()

    def _create_message(
        self,
        channel: Channel,
        payload: dict[str, Any],
        uploads: list[Upload],
        *,
        allowed_flags: int,
        type: int = 0,
        handle: InteractionHandle | None = None,
        followup_of: Message | None = None,
        loading: bool = False,
    ) -> Message:
        """A bot-authored message from a create payload (validated like Discord)."""
        flags = int(payload.get("flags") or 0) & allowed_flags
        if loading:
            flags |= FLAG_LOADING
        ephemeral = bool(flags & FLAG_EPHEMERAL)
        self._check_upload_sizes(uploads)
        content = payload.get("content") or ""
        embeds = list(payload.get("embeds") or [])
        components = self._normalise_components(payload.get("components"))
        if not loading:
            self._validate_message(
                content=str(content),
                embeds=embeds,
                components=components,
                attachments=len(uploads),
                flags=flags,
                extra=bool(payload.get("sticker_ids") or payload.get("poll")),
            )
        attachments = self._build_attachments(channel.id, payload, uploads, [], ephemeral=ephemeral)
        guild = self.guild_of(channel)
        metadata = None
        if handle is not None:
            metadata = self._interaction_metadata(handle, followup_of)
        reference = payload.get("message_reference")
        if reference is not None:
            ref_id = _as_int(reference.get("message_id"))
            if ref_id not in self._messages and reference.get("fail_if_not_exists", True):
                raise form_error(
                    "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                )
            reference = {
                "type": reference.get("type", 0),
                "message_id": str(ref_id),
                "channel_id": str(channel.id),
                **({"guild_id": str(guild.id)} if guild else {}),
            }
            if type == 0:
                type = 19
        msg = Message(
            self,
            id=next_snowflake(),
            channel_id=channel.id,
            guild_id=guild.id if guild else None,
            author=self.bot_user,
            content=str(content),
            flags=flags,
            embeds=self._resolve_embed_attachments(embeds, attachments),
            components=components,
            attachments=attachments,
            type=type,
            payload=payload,
            allowed_mentions=payload.get("allowed_mentions"),
            webhook_id=self.application_id if handle is not None else None,
            application_id=self.application_id if handle is not None else None,
            interaction_metadata=metadata,
            interaction_user_id=handle.user.id if handle is not None else None,
            message_reference=reference,
            tts=bool(payload.get("tts")),
        )
        self._store(msg, channel)
        return msg

    def _edit_message(
        self, msg: Message, payload: dict[str, Any], uploads: list[Upload]
    ) -> Message:
        """Apply an edit the way Discord does (only the keys present change)."""
        self._check_upload_sizes(uploads)
        content = msg.content
        if "content" in payload:
            content = str(payload["content"] or "")
        embeds = msg.embeds
        if "embeds" in payload:
            embeds = list(payload["embeds"] or [])
        components = msg.components
        if "components" in payload:
            components = self._normalise_components(payload["components"])
        flags = msg.flags & ~FLAG_LOADING
        if "flags" in payload and payload["flags"] is not None:
            flags = (flags & ~EDITABLE_FLAGS) | (int(payload["flags"]) & EDITABLE_FLAGS)
            flags |= msg.flags & FLAG_COMPONENTS_V2  # v2 cannot be switched off
        changes_files = "attachments" in payload or bool(uploads)
        kept = len(msg.attachments)
        if "attachments" in payload:
            existing = {a.id for a in msg.attachments}
            entries = payload.get("attachments") or []
            kept = sum(1 for e in entries if _as_int(e.get("id")) in existing)
        self._validate_message(
            content=content,
            embeds=embeds,
            components=components,
            attachments=kept + len(uploads),
            flags=flags,
        )
        attachments = msg.attachments
        if changes_files:
            attachments = self._build_attachments(
                msg.channel_id, payload, uploads, msg.attachments, ephemeral=msg.ephemeral
            )
        was_loading = msg.loading
        msg.content = content
        msg.embeds = self._resolve_embed_attachments(embeds, attachments)
        msg.components = components
        msg.attachments = attachments
        msg.flags = flags
        if "allowed_mentions" in payload:
            msg.allowed_mentions = payload["allowed_mentions"]
        msg.payload = payload
        msg.payloads.append(payload)
        msg.edits += 1
        if not was_loading:
            msg.edited_at = utcnow()
        msg._snapshot()
        self._bump()
        return msg

    def _interaction_metadata(
        self, handle: InteractionHandle, followup_of: Message | None
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "id": str(handle.id),
            "type": handle.type,
            "user": handle.user.user_payload(),
            "authorizing_integration_owners": handle.payload["authorizing_integration_owners"],
        }
        data = handle.payload.get("data", {})
        if handle.type == APPLICATION_COMMAND:
            metadata["name"] = data.get("name")
            metadata["command_type"] = data.get("type", 1)
            if data.get("type") == 3:
                metadata["target_message_id"] = data.get("target_id")
            elif data.get("type") == 2:
                metadata["target_user"] = self.users[int(data["target_id"])].user_payload()
        elif handle.message is not None and handle.type == MESSAGE_COMPONENT:
            metadata["interacted_message_id"] = str(handle.message.id)
        if followup_of is not None:
            metadata["original_response_message_id"] = str(followup_of.id)
        return metadata

    # ================================================================== REST: identity

    async def _get_me(self, request: web.Request) -> web.Response:
        grant = self._oauth_grant(request)
        if grant is not None:  # a person's Bearer token: who they are
            return _json(grant.user.user_payload())
        return _json(
            {
                **self.bot_user.user_payload(),
                "verified": True,
                "mfa_enabled": False,
                "locale": "en-US",
                "flags": 0,
                "email": None,
            }
        )

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(_as_int(request.match_info["user_id"]) or 0)
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return _json(user.user_payload())

    async def _create_dm(self, request: web.Request) -> web.Response:
        payload, _ = await self._read_body(request)
        user = self.users.get(_as_int(payload.get("recipient_id")) or 0)
        if user is None:
            raise form_error("recipient_id", "BASE_TYPE_BAD_SNOWFLAKE", "Unknown user")
        return _json(self.dm_channel(user).to_dict())

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(self.application_id),
                "name": self.bot_user.name,
                "icon": None,
                "description": "Atelier test application",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.owner.user_payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": self.bot_user.user_payload(),
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "approximate_guild_count": len(self.bot_guilds()),
                "integration_types_config": {"0": {}},
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json({"url": self.gateway_url.rstrip("/")})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        return _json(
            {
                "url": self.gateway_url.rstrip("/"),
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    # ================================================================== REST: commands

    def _command_scope(self, request: web.Request) -> tuple[int | None, list[dict[str, Any]]]:
        if _as_int(request.match_info["app_id"]) != self.application_id:
            raise ApiError(404, 10002, "Unknown Application")
        raw_guild = request.match_info.get("guild_id")
        if raw_guild is None:
            return None, self.commands
        guild = self.guilds.get(_as_int(raw_guild) or 0)
        if guild is None or not guild.has_member(self.bot_user) or not guild.commands_scope:
            raise ApiError(403, 50001, "Missing Access")
        return guild.id, self.guild_commands.setdefault(guild.id, [])

    def _echo_command(self, command: dict[str, Any], guild_id: int | None) -> dict[str, Any]:
        kind = int(command.get("type", 1))
        name = command.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            raise form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        if kind == 1:
            if not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
                raise form_error("name", "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
            if not 1 <= len(command.get("description") or "") <= 100:
                raise form_error(
                    "description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            if len(command.get("options") or []) > 25:
                raise form_error("options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer.")
        key = (guild_id, kind, name)
        command_id = self._command_ids.setdefault(key, next_snowflake())
        echoed = {
            **command,
            "id": str(command_id),
            "application_id": str(self.application_id),
            "version": str(next_snowflake()),
            "type": kind,
            "name": name,
            "description": command.get("description") or "" if kind == 1 else "",
            "options": command.get("options") or [],
            "default_member_permissions": command.get("default_member_permissions"),
            "dm_permission": command.get("dm_permission", True),
            "nsfw": bool(command.get("nsfw", False)),
            "contexts": command.get("contexts"),
            "integration_types": command.get("integration_types") or [0],
        }
        if guild_id is not None:
            echoed["guild_id"] = str(guild_id)
        return echoed

    async def _list_commands(self, request: web.Request) -> web.Response:
        _, commands = self._command_scope(request)
        return _json(commands)

    async def _put_commands(self, request: web.Request) -> web.Response:
        guild_id, _ = self._command_scope(request)
        raw = await request.read()
        payload = json.loads(raw or b"[]")
        if not isinstance(payload, list):
            raise ApiError(400, 50035, "Invalid Form Body")
        seen: set[tuple[int, str]] = set()
        echoed = []
        for command in payload:
            key = (int(command.get("type", 1)), command.get("name"))
            if key in seen:
                raise form_error(
                    "_errors", "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate command name"
                )
            seen.add(key)
            echoed.append(self._echo_command(command, guild_id))
        if guild_id is None:
            self.commands = echoed
        else:
            self.guild_commands[guild_id] = echoed
        self.sync_count += 1
        self._bump()
        return _json(echoed)

    async def _upsert_command(self, request: web.Request) -> web.Response:
        guild_id, commands = self._command_scope(request)
        payload, _ = await self._read_body(request)
        echoed = self._echo_command(payload, guild_id)
        existing = next((i for i, c in enumerate(commands) if c["id"] == echoed["id"]), None)
        if existing is None:
            commands.append(echoed)
            status = 201
        else:
            commands[existing] = echoed
            status = 200
        self._bump()
        return _json(echoed, status)

    def _command_by_id(self, request: web.Request) -> tuple[int, list[dict[str, Any]]]:
        _, commands = self._command_scope(request)
        command_id = request.match_info["command_id"]
        for index, command in enumerate(commands):
            if command["id"] == command_id:
                return index, commands
        raise ApiError(404, 10063, "Unknown application command")

    async def _get_command(self, request: web.Request) -> web.Response:
        index, commands = self._command_by_id(request)
        return _json(commands[index])

    async def _edit_command(self, request: web.Request) -> web.Response:
        index, commands = self._command_by_id(request)
        guild_id, _ = self._command_scope(request)
        payload, _ = await self._read_body(request)
        commands[index] = self._echo_command({**commands[index], **payload}, guild_id)
        self._bump()
        return _json(commands[index])

    async def _delete_command(self, request: web.Request) -> web.Response:
        index, commands = self._command_by_id(request)
        del commands[index]
        self._bump()
        return _no_content()

    # ================================================================== REST: interactions

    async def _callback(self, request: web.Request) -> web.Response:
        handle = self._interactions.get(_as_int(request.match_info["interaction_id"]) or 0)
        if handle is None or handle.token != request.match_info["token"] or handle.expired:
            raise ApiError(404, 10062, "Unknown interaction")
        if handle.callbacks:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body, uploads = await self._read_body(request)
        kind = body.get("type")
        data = body.get("data") or {}
        if kind not in ALLOWED_CALLBACKS[handle.type]:
            raise form_error(
                "type",
                "INTERACTION_CALLBACK_TYPE_INVALID",
                f"Callback type {kind} is invalid for interaction type {handle.type}",
            )
        original: Message | None = None
        if kind == 4:
            command_type = handle.payload["data"].get("type", 1)
            message_type = 0
            if handle.type == APPLICATION_COMMAND:
                message_type = 20 if command_type == 1 else 23
            original = self._create_message(
                handle.channel,
                data,
                uploads,
                allowed_flags=EDITABLE_FLAGS | FLAG_EPHEMERAL,
                type=message_type,
                handle=handle,
            )
        elif kind == 5:
            command_type = handle.payload["data"].get("type", 1)
            message_type = 0
            if handle.type == APPLICATION_COMMAND:
                message_type = 20 if command_type == 1 else 23
            original = self._create_message(
                handle.channel,
                {"content": "", "flags": int(data.get("flags") or 0)},
                [],
                allowed_flags=FLAG_EPHEMERAL,
                type=message_type,
                handle=handle,
                loading=True,
            )
        elif kind in (6, 7):
            if handle.message is None or handle.message.deleted:
                raise ApiError(400, 50035, "Interaction has no message to update")
            original = handle.message
            if kind == 7:
                self._edit_message(original, data, uploads)
        elif kind == 8:
            choices = data.get("choices") or []
            if len(choices) > 25:
                raise form_error("data.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer.")
            for i, choice in enumerate(choices):
                if not 1 <= len(str(choice.get("name", ""))) <= 100:
                    raise form_error(
                        f"data.choices.{i}.name", "BASE_TYPE_BAD_LENGTH", "1 to 100 characters"
                    )
        elif kind == 9:
            title = data.get("title") or ""
            if not 1 <= len(title) <= 45:
                raise form_error("data.title", "BASE_TYPE_BAD_LENGTH", "1 to 45 characters")
            if not 1 <= len(data.get("components") or []) <= 5:
                raise form_error("data.components", "BASE_TYPE_BAD_LENGTH", "1 to 5 components")
            handle.modal = data
            self.modals[str(data.get("custom_id"))] = (data, handle)

        arrived = request.get(ARRIVED, time.monotonic())
        ephemeral = bool(original.ephemeral) if original is not None else False
        handle.callbacks.append(Callback(type=kind, data=data, ephemeral=ephemeral, at=arrived))
        handle.acked_at = arrived
        handle.original_message = original
        self._bump()

        if not _truthy_query(request.query.get("with_response")):
            return _no_content()
        interaction: dict[str, Any] = {"id": str(handle.id), "type": handle.type}
        response: dict[str, Any] = {"interaction": interaction}
        if original is not None:
            interaction.update(
                response_message_id=str(original.id),
                response_message_loading=original.loading,
                response_message_ephemeral=original.ephemeral,
            )
            if kind in (4, 5, 7):
                response["resource"] = {"type": kind, "message": original.to_dict()}
        return _json(response)

    def _webhook_handle(self, request: web.Request) -> InteractionHandle:
        if _as_int(request.match_info["app_id"]) != self.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        handle = self._by_token.get(request.match_info["token"])
        if handle is None or handle.expired:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return handle

    def _webhook_message(self, handle: InteractionHandle, raw_id: str) -> Message:
        if raw_id == "@original":
            msg = handle.original_message
        else:
            wanted = _as_int(raw_id)
            candidates = [handle.original_message, *handle.followups]
            msg = next((m for m in candidates if m is not None and m.id == wanted), None)
        if msg is None or msg.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _webhook_execute(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        if not handle.callbacks:
            raise ApiError(404, 10015, "Unknown Webhook")
        payload, uploads = await self._read_body(request)
        original = handle.original_message
        if (original is not None and original.loading and not original.deleted
                and handle.callbacks[0].type == 5):
            # Discord fills a "thinking" placeholder with the first followup; the
            # placeholder's ephemerality (chosen at defer time) wins. Once the
            # placeholder is deleted, a followup is a new message with its own flags.
            msg = self._edit_message(original, payload, uploads)
        else:
            msg = self._create_message(
                handle.channel,
                payload,
                uploads,
                allowed_flags=EDITABLE_FLAGS | FLAG_EPHEMERAL,
                handle=handle,
                followup_of=original,
            )
        handle.followups.append(msg)
        self._bump()
        if _truthy_query(request.query.get("wait")):
            return _json(msg.to_dict())
        return _no_content()

    async def _webhook_get(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        return _json(self._webhook_message(handle, request.match_info["message_id"]).to_dict())

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        msg = self._webhook_message(handle, request.match_info["message_id"])
        payload, uploads = await self._read_body(request)
        self._edit_message(msg, payload, uploads)
        return _json(msg.to_dict())

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        handle = self._webhook_handle(request)
        msg = self._webhook_message(handle, request.match_info["message_id"])
        msg.deleted = True
        self._bump()
        return _no_content()

    # ================================================================== REST: channels

    def _bot_channel(self, request: web.Request, *, send: bool = False) -> Channel:
        """The channel in the path, if the bot can see it (and send there, with ``send``)."""
        channel = self.channels.get(_as_int(request.match_info["channel_id"]) or 0)
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        guild = self.guild_of(channel)
        if guild is None:
            recipient = channel.recipient
            assert recipient is not None
            shares_guild = any(g.has_member(recipient) for g in self.bot_guilds())
            if send and (not recipient.dms_open or not shares_guild):
                raise ApiError(403, 50007, "Cannot send messages to this user")
            return channel
        if not guild.has_member(self.bot_user):
            raise ApiError(403, 50001, "Missing Access")
        perms = guild.permissions_in(self.bot_user, channel)
        if not perms & Perm.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if send and not perms & Perm.SEND_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        return channel

    def _channel_message(self, channel: Channel, raw_id: str) -> Message:
        msg = self._messages.get(_as_int(raw_id) or 0)
        if msg is None or msg.channel_id != channel.id or msg.deleted or msg.ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _json(self._bot_channel(request).to_dict())

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel = self._bot_channel(request)
        limit = max(1, min(100, _as_int(request.query.get("limit")) or 50))
        before = _as_int(request.query.get("before"))
        after = _as_int(request.query.get("after"))
        msgs = self.channel_messages(channel, include_ephemeral=False)
        if before is not None:
            msgs = [m for m in msgs if m.id < before]
        if after is not None:
            msgs = [m for m in msgs if m.id > after][:limit]
        msgs = list(reversed(msgs))[:limit]
        return _json([m.to_dict() for m in msgs])

    async def _create_channel_message(self, request: web.Request) -> web.Response:
        channel = self._bot_channel(request, send=True)
        payload, uploads = await self._read_body(request)
        nonce = payload.get("nonce")
        if isinstance(nonce, str) and len(nonce) > NONCE_MAX:
            raise form_error("nonce", "BASE_TYPE_MAX_LENGTH",
                             f"Must be {NONCE_MAX} or fewer in length.")
        key = (self.bot_user.id, str(nonce))
        if nonce is not None and payload.get("enforce_nonce"):
            earlier = self._nonces.get(key)
            if earlier is not None and time.monotonic() - earlier[1] < NONCE_WINDOW:
                first = self._messages[earlier[0]]
                if first.deleted:
                    raise ApiError(404, 10008, "Unknown Message")
                return _json(first.to_dict())
        guild = self.guild_of(channel)
        if uploads and guild is not None:
            if not guild.permissions_in(self.bot_user, channel) & Perm.ATTACH_FILES:
                raise ApiError(403, 50013, "Missing Permissions")
        msg = self._create_message(channel, payload, uploads, allowed_flags=EDITABLE_FLAGS)
        if nonce is not None:
            self._nonces[key] = (msg.id, time.monotonic())
        return _json(msg.to_dict())

    async def _get_channel_message(self, request: web.Request) -> web.Response:
        channel = self._bot_channel(request)
        return _json(self._channel_message(channel, request.match_info["message_id"]).to_dict())

    async def _edit_channel_message(self, request: web.Request) -> web.Response:
        channel = self._bot_channel(request)
        msg = self._channel_message(channel, request.match_info["message_id"])
        if msg.author is not self.bot_user:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        payload, uploads = await self._read_body(request)
        self._edit_message(msg, payload, uploads)
        return _json(msg.to_dict())

    async def _delete_channel_message(self, request: web.Request) -> web.Response:
        channel = self._bot_channel(request)
        msg = self._channel_message(channel, request.match_info["message_id"])
        guild = self.guild_of(channel)
        if msg.author is not self.bot_user:
            allowed = guild is not None and (
                guild.permissions_in(self.bot_user, channel) & Perm.MANAGE_MESSAGES
            )
            if not allowed:
                raise ApiError(403, 50013, "Missing Permissions")
        msg.deleted = True
        self._bump()
        return _no_content()

    async def _add_reaction(self, request: web.Request) -> web.Response:
        channel = self._bot_channel(request)
        msg = self._channel_message(channel, request.match_info["message_id"])
        msg.reactions.setdefault(request.match_info["emoji"], set()).add(self.bot_user.id)
        self._bump()
        return _no_content()

    async def _remove_reaction(self, request: web.Request) -> web.Response:
        channel = self._bot_channel(request)
        msg = self._channel_message(channel, request.match_info["message_id"])
        msg.reactions.get(request.match_info["emoji"], set()).discard(self.bot_user.id)
        self._bump()
        return _no_content()

    async def _typing(self, request: web.Request) -> web.Response:
        self._bot_channel(request, send=True)
        return _no_content()

    # ================================================================== REST: guilds, CDN

    def _bot_guild(self, request: web.Request) -> Guild:
        guild = self.guilds.get(_as_int(request.match_info["guild_id"]) or 0)
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        if not guild.has_member(self.bot_user):
            raise ApiError(403, 50001, "Missing Access")
        return guild

    async def _get_guild(self, request: web.Request) -> web.Response:
        return _json(self._bot_guild(request).to_dict(full=False))

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._bot_guild(request)
        return _json([c.to_dict() for c in guild.channels])

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self._bot_guild(request)
        user = self.users.get(_as_int(request.match_info["user_id"]) or 0)
        if user is None or not guild.has_member(user):
            raise ApiError(404, 10007, "Unknown Member")
        return _json(guild.member_payload(user))

    async def _cdn(self, request: web.Request) -> web.Response:
        attachment = self._attachments.get(_as_int(request.match_info["attachment_id"]) or 0)
        if attachment is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(
            body=attachment.data,
            content_type=attachment.content_type or "application/octet-stream",
        )
