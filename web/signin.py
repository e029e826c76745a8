"""Signing in to the gallery with Discord: the OAuth2 authorization-code grant (scopes
`identify guilds`), the session that remembers who is signed in, and CSRF tokens for forms.

The session is an encrypted, signed cookie (aiohttp-session with Fernet): it holds the person's
id, name, Discord tokens and a CSRF token, and nothing the browser could read or change. Their
list of servers is kept in memory and fetched from Discord again once it is 10 minutes old, so
leaving a server closes its gallery within 10 minutes (SPEC §8)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from aiohttp_session import Session, get_session, new_session

log = logging.getLogger(__name__)

SCOPES = "identify guilds"
GUILDS_MAX_AGE = 600.0  # seconds a person's list of servers is trusted (SPEC §8)
REFRESH_BEFORE = 60.0  # renew an access token this long before Discord lets it expire
GUILDS_PAGE = 200  # Discord's largest page of `/users/@me/guilds`
RATE_LIMIT_WAIT_MAX = 5.0  # seconds worth waiting out a 429 while someone waits for a page


class OAuthError(Exception):
    """Discord did not answer an OAuth2 call as expected (down, slow, or refused)."""


class Revoked(OAuthError):
    """Discord no longer accepts the person's token or code: they must sign in again."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Tokens:
    access: str = ""
    refresh: str = ""
    expires_at: float = 0.0  # wall-clock seconds


@dataclass(frozen=True)
class Viewer:
    """The signed-in person looking at a page."""

    id: int
    name: str
    csrf: str  # the token their forms carry
    guild_ids: frozenset[int]  # the servers in their Discord guild list, at most 10 minutes old


class DiscordOAuth:
    """Discord's side of the grant: the token endpoint, and the two routes the gallery reads
    with a person's Bearer token."""

    def __init__(self, http: aiohttp.ClientSession, api_base: str, client_id: int,
                 client_secret: str, redirect_uri: str) -> None:
        self.http = http
        self.api_base = api_base.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri

    async def exchange(self, code: str) -> Tokens:
        """The tokens an authorization code stands for."""
        return await self._token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": self.redirect_uri})

    async def refresh(self, refresh_token: str) -> Tokens:
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def revoke(self, access: str) -> None:
        """End a token at Discord, so a copy of the session cookie cannot be used again."""
        await self._request("POST", "/oauth2/token/revoke",
                            data={"token": access, "token_type_hint": "access_token"},
                            headers={"Authorization": self._client_auth()})

    async def user(self, access: str) -> dict[str, Any]:
        """`GET /users/@me`: the person's id and names."""
        data = await self._call("GET", "/users/@me", access)
        if not isinstance(data, dict) or "id" not in data:
            raise OAuthError("/users/@me answered without an id")
        return data

    async def guild_ids(self, access: str) -> frozenset[int]:
        """`GET /users/@me/guilds`, every page of it: the ids of the person's servers."""
        found: set[int] = set()
        after = 0
        while True:
            page = await self._call("GET", "/users/@me/guilds", access,
                                    params={"limit": str(GUILDS_PAGE), "after": str(after)})
            if not isinstance(page, list):
                raise OAuthError("/users/@me/guilds answered without a list")
            ids = [int(guild["id"]) for guild in page]
            found.update(ids)
            if len(ids) < GUILDS_PAGE:
                return frozenset(found)
            after = max(ids)

    async def _token(self, form: dict[str, str]) -> Tokens:
        try:
            data = await self._request("POST", "/oauth2/token", data=form,
                                       headers={"Authorization": self._client_auth()})
        except Revoked as error:
            if error.status == 401:  # invalid_client: the operator's setting, not the person
                raise OAuthError("Discord refused the application's client id and secret: "
                                 "check DISCORD_CLIENT_SECRET") from None
            raise
        try:
            return Tokens(str(data["access_token"]), str(data.get("refresh_token", "")),
                          time.time() + float(data.get("expires_in", 0)))
        except (KeyError, TypeError, ValueError):
            raise OAuthError("the token endpoint answered without a token") from None

    def _client_auth(self) -> str:
        """HTTP Basic credentials of the application, for the token endpoints."""
        pair = f"{self.client_id}:{self.client_secret}".encode()
        return f"Basic {base64.b64encode(pair).decode()}"

    async def _call(self, method: str, path: str, access: str,
                    params: Mapping[str, str] | None = None) -> Any:
        return await self._request(method, path, params=params,
                                   headers={"Authorization": f"Bearer {access}"})

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.api_base + path
        for _ in range(2):
            try:
                async with self.http.request(method, url, **kwargs) as response:
                    if response.status == 429:
                        wait = float((await response.json(content_type=None) or {})
                                     .get("retry_after", RATE_LIMIT_WAIT_MAX + 1))
                        if wait <= RATE_LIMIT_WAIT_MAX:
                            await asyncio.sleep(wait)
                            continue
                    if response.status in (400, 401, 403):
                        # 400: a used or foreign code (invalid_grant); 401/403: a revoked token.
                        raise Revoked(f"{method} {path}: {response.status}", response.status)
                    if response.status >= 300:
                        raise OAuthError(f"{method} {path}: {response.status}")
                    return await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, ValueError) as error:
                raise OAuthError(f"{method} {path}: {error!r}") from None
        raise OAuthError(f"{method} {path}: rate limited")


class Memberships:
    """Each signed-in person's servers, from their Discord guild list, fetched again once
    `max_age` seconds old; concurrent requests of one person share one fetch."""

    def __init__(self, oauth: DiscordOAuth, clock: Callable[[], float],
                 max_age: float = GUILDS_MAX_AGE) -> None:
        self.oauth = oauth
        self.clock = clock
        self.max_age = max_age
        self._lists: dict[int, tuple[float, frozenset[int]]] = {}
        self._pending: dict[int, asyncio.Future[frozenset[int]]] = {}

    def remember(self, user_id: int, guild_ids: frozenset[int]) -> None:
        self._lists[user_id] = (self.clock(), guild_ids)

    def forget(self, user_id: int) -> None:
        self._lists.pop(user_id, None)

    async def guild_ids(self, user_id: int, access: str) -> frozenset[int]:
        known = self._lists.get(user_id)
        if known is not None and self.clock() - known[0] < self.max_age:
            return known[1]
        pending = self._pending.get(user_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(user_id, access))
            self._pending[user_id] = pending
            pending.add_done_callback(lambda _: self._pending.pop(user_id, None))
        return await asyncio.shield(pending)

    async def _fetch(self, user_id: int, access: str) -> frozenset[int]:
        guild_ids = await self.oauth.guild_ids(access)
        self.remember(user_id, guild_ids)
        return guild_ids


class SignedOut(Exception):
    """The request has no (valid) session: pages send the browser to `/login`."""


class Unavailable(Exception):
    """Discord did not answer while the gallery needed it; the person may try again."""


def local_path(value: str | None) -> str:
    """`value` if it is a path on this site, else `/`: a sign-in never sends anyone elsewhere."""
    if (not value or not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(ord(character) < 0x20 for character in value)):
        return "/"
    return value


class SignIn:
    """The sign-in routes and the signed-in person behind a request."""

    def __init__(self, oauth: DiscordOAuth, oauth_url: str, clock: Callable[[], float]) -> None:
        self.oauth = oauth
        self.oauth_url = oauth_url
        self.memberships = Memberships(oauth, clock)

    def authorize_url(self, state: str) -> str:
        query = urlencode({"response_type": "code", "client_id": str(self.oauth.client_id),
                           "scope": SCOPES, "redirect_uri": self.oauth.redirect_uri,
                           "state": state})
        return f"{self.oauth_url}?{query}"

    async def start(self, request: web.Request) -> str:
        """`GET /login`: bind a fresh `state` to this browser; the URL of Discord's page."""
        session = await get_session(request)
        state = secrets.token_urlsafe(24)
        session["state"] = state
        session["next"] = local_path(request.query.get("next"))
        return self.authorize_url(state)

    async def finish(self, request: web.Request) -> str:
        """`GET /auth/callback`: check `state`, trade the code for tokens, read who this is and
        their servers, and start their session; the path to go on to. Raises `Revoked` for a
        code or state that does not belong to this browser, `OAuthError` when Discord fails."""
        session = await get_session(request)
        state = session.pop("state", None)
        next_path = local_path(session.pop("next", None))
        given = request.query.get("state", "")
        if not isinstance(state, str) or not hmac.compare_digest(state, given):
            raise Revoked("the sign-in was not started in this browser")
        code = request.query.get("code")
        if not code:
            raise Revoked("Discord sent no code")
        tokens = await self.oauth.exchange(code)
        user = await self.oauth.user(tokens.access)
        guild_ids = await self.oauth.guild_ids(tokens.access)
        user_id = int(user["id"])
        self.memberships.remember(user_id, guild_ids)
        # A new session (and cookie) at sign-in: nothing from before it carries over.
        session = await new_session(request)
        session.update({
            "user_id": str(user_id),
            "name": str(user.get("global_name") or user.get("username") or user_id),
            "access": tokens.access,
            "refresh": tokens.refresh,
            "expires_at": tokens.expires_at,
            "csrf": secrets.token_urlsafe(24),
        })
        log.info("gallery: %s signed in", user_id)
        return next_path

    async def end(self, request: web.Request) -> None:
        """`POST /logout` (its CSRF token already checked): the cookie is cleared, and its
        Discord token revoked and the person's servers forgotten, so a copy of the cookie made
        before is refused at its next request."""
        session = await get_session(request)
        user_id, access = session.get("user_id"), session.get("access")
        session.invalidate()
        if user_id is None:
            return
        self.memberships.forget(int(user_id))
        try:
            await self.oauth.revoke(str(access))
        except OAuthError as error:
            log.warning("gallery: could not revoke a token at sign-out: %s", error)

    async def viewer(self, request: web.Request) -> Viewer:
        """Who is signed in, with their servers at most 10 minutes old. Raises `SignedOut`
        (the session is ended where Discord no longer accepts it) or `Unavailable`."""
        session = await get_session(request)
        if "user_id" not in session:
            raise SignedOut()
        try:
            user_id = int(session["user_id"])
            access = str(session["access"])
            if float(session["expires_at"]) - REFRESH_BEFORE < time.time():
                access = await self._renew(session)
            guild_ids = await self.memberships.guild_ids(user_id, access)
            return Viewer(user_id, str(session["name"]), str(session["csrf"]), guild_ids)
        except Revoked:
            session.invalidate()
            raise SignedOut() from None
        except (KeyError, TypeError, ValueError):
            session.invalidate()  # a session from an older layout
            raise SignedOut() from None
        except OAuthError as error:
            log.warning("gallery: Discord did not answer for a signed-in person: %s", error)
            raise Unavailable() from None

    async def _renew(self, session: Session) -> str:
        tokens = await self.oauth.refresh(str(session["refresh"]))
        session.update({"access": tokens.access, "refresh": tokens.refresh or session["refresh"],
                        "expires_at": tokens.expires_at})
        return tokens.access


async def csrf_ok(request: web.Request, form: Mapping[str, Any]) -> bool:
    """Whether a POST carries this session's CSRF token."""
    session = await get_session(request)
    expected = session.get("csrf")
    given = form.get("csrf")
    return (isinstance(expected, str) and isinstance(given, str)
            and hmac.compare_digest(expected, given))
