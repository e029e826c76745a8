"""The gallery's routes (SPEC §8): sign-in, the servers page, a server's gallery, a job's page,
❤️, and the pictures and thumbnails themselves.

Anything a person may not see — another server's job or picture, a job from a channel they
cannot view, someone else's DM job, an unknown id — answers the same 404, whatever the reason."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import discord
from aiohttp import web
from aiohttp_session import get_session
from PIL import Image

from bot.engine.samplers import SAMPLERS
from bot.render import edit_text, lineage_text
from cogs.history import age_text, shorten
from storage import JOB_KINDS, ImageRecord, JobKind, JobRecord, JobStatus, Scope
from web.signin import OAuthError, Revoked, SignedOut, Unavailable, Viewer, csrf_ok
from web.visibility import viewer_scope

if TYPE_CHECKING:
    from web.server import Gallery, Handler

log = logging.getLogger(__name__)

PAGE_SIZE = 48
SEARCH_MAX = 200  # as `/history`'s search option
PAGE_MAX = 100_000
PROMPT_SHOWN = 90  # characters of a prompt on a gallery card
FILTER_MAX = 100  # characters of a model name in a filter
JOB_ID = re.compile(r"[a-z][a-z0-9]{7}")
# Pictures never change under their hash: browsers keep them a year (privately: who may see a
# picture is decided per person).
IMMUTABLE = "private, max-age=31536000, immutable"
PICTURE_ROUTES = ("/images/", "/thumbs/")


class NotFound(Exception):
    """Nothing here for this person: one answer whatever the reason."""


@dataclass(frozen=True)
class Filters:
    """What a gallery page shows, from its query string (`?q=&user=&model=&kind=
    &favourites=1&page=N`); unusable values are ignored rather than refused."""

    search: str = ""
    user_id: int | None = None
    model: str | None = None
    kind: str | None = None
    favourites: bool = False
    page: int = 1

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        user = query.get("user", "")
        page = query.get("page", "")
        model = query.get("model", "").strip()
        kind = query.get("kind", "")
        return cls(
            search=" ".join(query.get("q", "").split())[:SEARCH_MAX],
            user_id=int(user) if user.isdigit() and len(user) <= 20 else None,
            model=model if model and len(model) <= FILTER_MAX else None,
            kind=kind if kind in JOB_KINDS else None,
            favourites=query.get("favourites", "") in ("1", "on", "true"),
            page=min(int(page), PAGE_MAX) if page.isdigit() and int(page) >= 1 else 1,
        )

    @property
    def active(self) -> bool:
        return bool(self.search or self.user_id or self.model or self.kind or self.favourites)

    def query(self, **changes: Any) -> str:
        """This page's query string with `changes` (a filter's change starts again at page 1)."""
        changed = replace(self, **({"page": 1} | changes))
        pairs = [("q", changed.search), ("user", changed.user_id or ""),
                 ("model", changed.model or ""), ("kind", changed.kind or ""),
                 ("favourites", "1" if changed.favourites else ""),
                 ("page", changed.page if changed.page > 1 else "")]
        text = urlencode([(name, value) for name, value in pairs if value])
        return f"?{text}" if text else "?"


@dataclass(frozen=True)
class Card:
    """One job on a gallery page."""

    job: JobRecord
    images: Sequence[ImageRecord]
    author: str
    prompt: str  # shortened
    age: str
    created: str  # ISO 8601


@dataclass(frozen=True)
class Picture:
    """One picture on a job page."""

    image: ImageRecord
    number: int
    favourite: bool
    parameters: str | None  # the PNG's own `parameters` text
    veiled: bool  # flagged by the safety checker, and the job's channel is not NSFW


def parameters_of(path: Path) -> str | None:
    """The `parameters` text chunk of a stored PNG, read without decoding its pixels.
    Blocking."""
    try:
        with Image.open(path) as image:
            text = image.info.get("parameters")
    except (OSError, ValueError):
        return None
    return text if isinstance(text, str) else None


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def when(seconds: float) -> str:
    """`3 Dec 2026, 08:11 UTC`"""
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def discord_link(job: JobRecord) -> str | None:
    """The job's message in Discord, while it is there."""
    if job.message_id is None or job.deleted_at is not None:
        return None
    return (f"https://discord.com/channels/{job.guild_id or '@me'}/{job.channel_id}"
            f"/{job.message_id}")


def plain(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status, headers={"Cache-Control": "no-store"})


class Pages:
    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery
        self.bot = gallery.bot

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self.servers)
        router.add_get("/login", self.login)
        router.add_get("/auth/callback", self.callback)
        router.add_post("/logout", self.logout)
        router.add_get("/signed-out", self.signed_out)
        router.add_get(r"/g/{guild:\d{1,20}|dm}", self.guild)
        router.add_get("/jobs/{job}", self.job)
        router.add_post("/jobs/{job}/favourite", self.favourite)
        router.add_get(r"/images/{sha:[0-9a-f]{64}}.png", self.image)
        router.add_get(r"/thumbs/{sha:[0-9a-f]{64}}.webp", self.thumbnail)

    # ---- answers for the ways a request can end ---------------------------------------------

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn the ways a request can end into pages: signed out, not found, Discord down, our
        own failure (logged; the page never shows what failed)."""
        try:
            return await handler(request)
        except SignedOut:
            return self._signed_out(request)
        except (NotFound, web.HTTPNotFound):
            session = await get_session(request)
            if "user_id" not in session:  # signed out, every path reads alike
                return self._signed_out(request)
            return self.gallery.render("message.html", 404, viewer=None, title="Not found",
                                       text="There is nothing here, or nothing you can see.",
                                       action=None)
        except Unavailable:
            return self.gallery.render(
                "message.html", 503, viewer=None, title="Try again in a moment",
                text="Atelier is starting, or Discord is not answering.", action=None)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("gallery: %s %s failed", request.method, request.path)
            return self.gallery.render(
                "message.html", 500, viewer=None, title="Something went wrong",
                text="Something went wrong on our side; please try again.", action=None)

    def _signed_out(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(PICTURE_ROUTES):
            return plain("Sign in to see this picture.", 401)
        if self.gallery.signin is None:
            return self._not_set_up()
        target = "/login"
        if request.method == "GET" and request.path != "/":
            target += "?next=" + quote(request.path_qs, safe="")
        return web.Response(status=302, headers={"Location": target})

    def _not_set_up(self) -> web.Response:
        return self.gallery.render("setup.html", 503, viewer=None,
                                   callback=f"{self.gallery.url}/auth/callback")

    async def viewer(self, request: web.Request) -> Viewer:
        """Who is signed in (or `SignedOut`)."""
        if self.gallery.signin is None:
            raise SignedOut()
        return await self.gallery.signin.viewer(request)

    async def scope(self, viewer: Viewer, guild_id: int | None) -> Scope | None:
        """What `viewer` may see of server `guild_id` (None: their direct messages); None when
        it is not one of their servers, or the bot is not in it."""
        if guild_id is None:
            return Scope(None, viewer.id)
        if guild_id not in viewer.guild_ids:
            return None
        if not self.bot.is_ready():
            raise Unavailable()
        try:
            return await viewer_scope(self.bot, self.gallery.members, guild_id, viewer.id)
        except discord.HTTPException as error:
            log.warning("gallery: could not fetch member %s of %s: %s", viewer.id, guild_id,
                        error)
            raise Unavailable() from None

    async def visible_job(self, viewer: Viewer, job_id: str) -> tuple[JobRecord, Scope]:
        """The job `job_id` and `viewer`'s scope in its server, if they may see it."""
        job = await self.bot.repo.job(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise NotFound()
        scope = await self.scope(viewer, job.guild_id)
        if scope is None or not job.visible_to(scope):
            raise NotFound()
        return job, scope

    async def names(self, viewer: Viewer, guild_id: int | None,
                    user_ids: Sequence[int]) -> dict[int, str]:
        guild = self.bot.get_guild(guild_id) if guild_id is not None else None
        if guild is None:
            return {viewer.id: viewer.name}  # in DMs every job is the viewer's own
        names = await self.gallery.members.names(guild, user_ids)
        names[viewer.id] = names.get(viewer.id, viewer.name)
        return names

    # ---- signing in and out -----------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        """`GET /login`: off to Discord's authorization page."""
        signin = self.gallery.signin
        if signin is None:
            return self._not_set_up()
        return web.Response(status=302, headers={"Location": await signin.start(request)})

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """`GET /auth/callback`: Discord sends the browser back here with a code."""
        signin = self.gallery.signin
        if signin is None:
            return self._not_set_up()
        if "error" in request.query:
            return self.gallery.render(
                "message.html", 200, viewer=None, title="Not signed in",
                text="Sign-in was cancelled in Discord.", action=("Sign in again", "/login"))
        try:
            next_path = await signin.finish(request)
        except Revoked as error:
            log.info("gallery: a sign-in was refused: %s", error)
            return self.gallery.render(
                "message.html", 400, viewer=None, title="Not signed in",
                text="This sign-in link has expired or was started in another browser.",
                action=("Sign in again", "/login"))
        except OAuthError as error:
            log.warning("gallery: sign-in failed: %s", error)
            return self.gallery.render(
                "message.html", 502, viewer=None, title="Not signed in",
                text="Discord did not complete the sign-in; please try again.",
                action=("Sign in again", "/login"))
        return web.Response(status=302, headers={"Location": next_path})

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """`POST /logout`: end the session (with the form's CSRF token)."""
        signin = self.gallery.signin
        if signin is None:
            return self._not_set_up()
        if not await csrf_ok(request, await request.post()):
            return self._stale_form()
        await signin.end(request)
        return web.Response(status=303, headers={"Location": "/signed-out"})

    async def signed_out(self, request: web.Request) -> web.StreamResponse:
        return self.gallery.render("message.html", 200, viewer=None, title="Signed out",
                                   text="You have signed out of Atelier's gallery.",
                                   action=("Sign in with Discord", "/login"))

    def _stale_form(self) -> web.Response:
        return self.gallery.render(
            "message.html", 403, viewer=None, title="Please try again",
            text="This page was open too long or came from elsewhere; reload it and try again.",
            action=None)

    # ---- pages ------------------------------------------------------------------------------

    async def servers(self, request: web.Request) -> web.StreamResponse:
        """`GET /`: the servers both the person and the bot are in, and their DMs."""
        viewer = await self.viewer(request)
        guilds = sorted((guild for guild_id in viewer.guild_ids
                         if (guild := self.bot.get_guild(guild_id)) is not None),
                        key=lambda guild: guild.name.casefold())
        return self.gallery.render("servers.html", viewer=viewer, guilds=guilds,
                                   starting=not self.bot.is_ready())

    async def guild(self, request: web.Request) -> web.StreamResponse:
        """`GET /g/<guild id>` (or `/g/dm`): the server's finished jobs, newest first."""
        viewer = await self.viewer(request)
        raw = request.match_info["guild"]
        guild_id = None if raw == "dm" else int(raw)
        scope = await self.scope(viewer, guild_id)
        if scope is None:
            raise NotFound()
        filters = Filters.from_query(request.query)
        jobs = await self.bot.repo.gallery(
            scope, user_id=filters.user_id, search=filters.search or None,
            favourites_of=viewer.id if filters.favourites else None, model=filters.model,
            kind=filters.kind, limit=PAGE_SIZE + 1, offset=(filters.page - 1) * PAGE_SIZE)
        more = len(jobs) > PAGE_SIZE
        jobs = jobs[:PAGE_SIZE]
        images = await self.bot.repo.images_of([job.id for job in jobs])
        wanted = [job.user_id for job in jobs]
        if filters.user_id is not None:
            wanted.append(filters.user_id)
        names = await self.names(viewer, guild_id, wanted)
        now = time.time()
        cards = [Card(job, images.get(job.id, []), names.get(job.user_id, ""),
                      shorten(job.prompt, PROMPT_SHOWN), age_text(now - job.created_at),
                      iso(job.created_at)) for job in jobs]
        guild = self.bot.get_guild(guild_id) if guild_id is not None else None
        models = [model.name for model in self.bot.catalogue]
        if filters.model is not None and filters.model not in models:
            models.append(filters.model)
        return self.gallery.render(
            "gallery.html", viewer=viewer, guild=guild, where=f"/g/{raw}", cards=cards,
            filters=filters, more=more, models=models, kinds=JOB_KINDS,
            member=names.get(filters.user_id) if filters.user_id is not None else None)

    async def job(self, request: web.Request) -> web.StreamResponse:
        """`GET /jobs/<job id>`: everything about one job, and its pictures full size."""
        viewer = await self.viewer(request)
        job, scope = await self.visible_job(viewer, request.match_info["job"])
        repo = self.bot.repo
        images = await repo.images(job.id)
        parent = await repo.job(job.parent_job) if job.parent_job is not None else None
        if parent is not None and not parent.visible_to(scope):
            parent = None
        children = await repo.children(job.id, scope)
        favourites = await repo.favourite_indexes(viewer.id, job.id)
        store = self.bot.store.root
        texts = await asyncio.gather(*(asyncio.to_thread(parameters_of, store / image.path)
                                       for image in images))
        pictures = [Picture(image, image.index + 1, image.index in favourites, text,
                            image.nsfw and not job.nsfw_allowed)
                    for image, text in zip(images, texts, strict=True)]
        names = await self.names(viewer, job.guild_id,
                                 [job.user_id, *(child.user_id for child in children)])
        guild = self.bot.get_guild(job.guild_id) if job.guild_id is not None else None
        channel = guild.get_channel_or_thread(job.channel_id) if guild is not None else None
        sampler = SAMPLERS.get(job.sampler)
        waiting = job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        return self.gallery.render(
            "job.html", viewer=viewer, job=job, guild=guild, waiting=waiting,
            position=self.bot.executor.position(job.id) if waiting else None,
            edit=edit_text(job.edit) if job.kind != JobKind.REROLL else None,
            where=f"/g/{job.guild_id or 'dm'}", pictures=pictures, parent=parent,
            lineage=lineage_text(job), children=children, names=names,
            channel=channel.name if channel is not None else None,
            sampler=f"{job.sampler} ({sampler.label})" if sampler else job.sampler,
            seeds=[image.seed for image in images] or job.seeds,
            created=when(job.created_at), created_iso=iso(job.created_at),
            discord=discord_link(job))

    async def favourite(self, request: web.Request) -> web.StreamResponse:
        """`POST /jobs/<job id>/favourite` (`index`, `csrf`): ❤️ a picture, or take it back."""
        form = await request.post()
        viewer = await self.viewer(request)
        if not await csrf_ok(request, form):
            return self._stale_form()
        job, _ = await self.visible_job(viewer, request.match_info["job"])
        images = await self.bot.repo.images(job.id)
        raw = form.get("index")
        number = int(raw) if isinstance(raw, str) and raw.isdigit() else 0
        if not 1 <= number <= len(images):
            raise NotFound()
        await self.bot.repo.toggle_favourite(viewer.id, job.id, images[number - 1].index)
        return web.Response(status=303, headers={"Location": f"/jobs/{job.id}#image-{number}"})

    # ---- pictures ---------------------------------------------------------------------------

    async def visible_image(self, request: web.Request) -> ImageRecord:
        """The picture `sha` names, if the signed-in person may see a job that holds it."""
        viewer = await self.viewer(request)
        for job, image in await self.bot.repo.image_holders(request.match_info["sha"]):
            scope = await self.scope(viewer, job.guild_id)
            if scope is not None and job.visible_to(scope):
                return image
        raise NotFound()

    async def image(self, request: web.Request) -> web.StreamResponse:
        """`GET /images/<sha256>.png`: the stored PNG, byte for byte."""
        image = await self.visible_image(request)
        if self._unchanged(request, image):
            return self._not_modified(image)
        data = await asyncio.to_thread(self.bot.store.read, image.path)
        return web.Response(body=data, content_type="image/png", headers=self._cached(image))

    async def thumbnail(self, request: web.Request) -> web.StreamResponse:
        """`GET /thumbs/<sha256>.webp`: a small WebP of the picture, made the first time."""
        image = await self.visible_image(request)
        if self._unchanged(request, image):
            return self._not_modified(image)
        path = await asyncio.to_thread(self.gallery.thumbnails.webp, image)
        if path is None:
            raise NotFound()
        data = await asyncio.to_thread(path.read_bytes)
        return web.Response(body=data, content_type="image/webp", headers=self._cached(image))

    @staticmethod
    def _cached(image: ImageRecord) -> dict[str, str]:
        return {"ETag": f'"{image.sha256}"', "Cache-Control": IMMUTABLE}

    @staticmethod
    def _unchanged(request: web.Request, image: ImageRecord) -> bool:
        tags = request.headers.get("If-None-Match", "")
        return f'"{image.sha256}"' in tags or tags.strip() == "*"

    def _not_modified(self, image: ImageRecord) -> web.Response:
        return web.Response(status=304, headers=self._cached(image))
