"""The gallery's web server: started in the bot's `setup_hook` on the bot's event loop, stopped
with the bot. It owns the aiohttp application (routes, sessions, templates, static files) and
the clients the pages share (Discord's OAuth2 endpoints, the member cache)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import jinja2
from aiohttp import web
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from bot import limits
from bot.thumbnails import Thumbnails
from web.signin import DiscordOAuth, SignIn
from web.visibility import Members

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

# aiohttp-session keeps its state under string keys, which aiohttp now asks to be typed keys; a
# warning on every request would say nothing an operator can act on.
warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module="aiohttp_session")

DISCORD_API = "https://discord.com/api/v10"
COOKIE_NAME = "atelier_session"
SESSION_MAX_AGE = 30 * 24 * 3600  # seconds a browser stays signed in without a visit
SECRET_FILE = "web_secret"
HTTP_TIMEOUT = 15.0  # seconds for one call to Discord's OAuth2 endpoints
STATIC_MAX_AGE = 7 * 24 * 3600  # static URLs carry their content's hash; a week is safe
# Pages use only their own scripts, styles and pictures; no site may frame them.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
FORM_ROOM = 64 * 1024  # bytes of a form beside its one file
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_key(secret: str | None, data_dir: Path) -> bytes:
    """The key that encrypts and signs sessions: from `WEB_SECRET`, or a random one generated
    once into `DATA_DIR` (mode 0600), so sessions outlive a restart. Blocking."""
    if secret is None:
        path = data_dir / SECRET_FILE
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            secret = secrets.token_urlsafe(32)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # O_EXCL: two processes starting at once cannot each write their own key.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                secret = path.read_text(encoding="utf-8").strip()
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(secret + "\n")
                log.info("generated the gallery's session key in %s", path)
    # Fernet takes 32 bytes; any text an operator chose becomes 32 bytes this way.
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str  # a hash of the content, in the URL, so a new release is fetched anew


def load_static() -> dict[str, StaticFile]:
    """The gallery's stylesheet, script and icons, read once. Blocking."""
    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
    files = {}
    for entry in resources.files("web").joinpath("static").iterdir():
        suffix = Path(entry.name).suffix
        if suffix in types:
            body = entry.read_bytes()
            files[entry.name] = StaticFile(body, types[suffix],
                                           hashlib.sha256(body).hexdigest()[:12])
    return files


def templates(static: dict[str, StaticFile]) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["static"] = lambda name: f"/static/{name}?v={static[name].version}"
    return environment


class Gallery:
    """The team gallery of one bot: `start` it once the repository is open, `close` it with the
    bot. With `WEB_PORT=0` both do nothing."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        # Tests move this clock to age the caches of guild lists and members.
        self.clock: Callable[[], float] = time.monotonic
        self.members = Members(lambda: self.clock())
        self.thumbnails = Thumbnails(bot.store, self.settings.data_dir / "thumbs")
        self.signin: SignIn | None = None  # None: sign-in is not set up
        self.static: dict[str, StaticFile] = {}
        self.pages: jinja2.Environment | None = None
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return self.settings.public_url

    async def start(self) -> None:
        settings = self.settings
        if settings.web_port == 0:
            log.info("gallery off (WEB_PORT=0)")
            return
        key = await asyncio.to_thread(session_key, settings.web_secret, settings.data_dir)
        self.static = await asyncio.to_thread(load_static)
        self.pages = templates(self.static)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
        if settings.discord_client_secret and self.bot.application_id is not None:
            oauth = DiscordOAuth(self._http, settings.discord_api_base or DISCORD_API,
                                 self.bot.application_id, settings.discord_client_secret,
                                 f"{settings.public_url}/auth/callback")
            self.signin = SignIn(oauth, settings.discord_oauth_url, lambda: self.clock())
        runner = web.AppRunner(self.application(key), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.web_host, settings.web_port).start()
        except OSError as error:
            log.error("the gallery cannot listen on %s:%d (%s); Atelier runs without it — set "
                      "WEB_PORT to a free port, or 0", settings.web_host, settings.web_port,
                      error.strerror or error)
            await runner.cleanup()
            await self._close_http()
            return
        self._runner = runner
        log.info("gallery at %s (listening on %s:%d)%s", settings.public_url, settings.web_host,
                 settings.web_port, "" if self.signin is not None else
                 "; sign-in is off until DISCORD_CLIENT_SECRET is set")

    def application(self, key: bytes) -> web.Application:
        # The pages need the finished Gallery; imported late.
        from web.editing import Edits
        from web.pages import Pages

        pages = Pages(self)
        # Room for the largest mask `Edit` sends (a PNG at most as large as an upload) and its
        # form; aiohttp refuses larger bodies with 413 before reading them.
        app = web.Application(middlewares=[self._headers],
                              client_max_size=limits.UPLOAD_MAX_BYTES + FORM_ROOM)
        setup_sessions(app, EncryptedCookieStorage(
            key, cookie_name=COOKIE_NAME, max_age=SESSION_MAX_AGE, httponly=True,
            samesite="Lax", secure=self.settings.public_url.startswith("https:"),
        ))
        # Inside the session's middleware, so a session ended on the way is saved as ended.
        app.middlewares.append(pages.errors)
        pages.add_routes(app.router)
        Edits(pages).add_routes(app.router)
        app.router.add_get("/static/{name}", self._static)
        return app

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self._close_http()

    async def _close_http(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # Job URLs name jobs; links out (to Discord) should not carry them.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    async def _static(self, request: web.Request) -> web.StreamResponse:
        found = self.static.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found.body, content_type=found.content_type, headers={
            "Cache-Control": f"public, max-age={STATIC_MAX_AGE}", "ETag": f'"{found.version}"'})

    def render(self, name: str, status: int = 200, **values: Any) -> web.Response:
        assert self.pages is not None
        text = self.pages.get_template(name).render(**values)
        return web.Response(text=text, status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store"})
