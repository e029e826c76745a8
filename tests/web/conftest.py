"""The gallery as people reach it: the real bot with its web app on a free port, signed in
through the Discord double's OAuth2 pages, driven over HTTP like a browser would."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from multidict import CIMultiDictProxy
from PIL import Image

from bot.imaging import encode_png
from storage import ImageRecord, JobRecord, new_job_id
from tests.double import Channel, DiscordDouble, Member
from tests.e2e.conftest import Atelier, finished, job_id_of, running_atelier, settings_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gallery_settings(double: DiscordDouble, data_dir: Path, **overrides: Any) -> Any:
    """Settings of a bot whose gallery listens on a free port, sign-in through `double`."""
    port = free_port()
    values: dict[str, Any] = dict(
        web_port=port, public_url=f"http://127.0.0.1:{port}",
        discord_client_secret=double.client_secret, discord_oauth_url=double.oauth_url)
    return settings_for(double, data_dir, **{**values, **overrides})


@pytest_asyncio.fixture
async def gallery(discord_double: DiscordDouble, data_dir: Path) -> AsyncIterator[Atelier]:
    async with running_atelier(discord_double, gallery_settings(discord_double, data_dir)) as bot:
        yield bot


@dataclass
class Page:
    status: int
    text: str
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def job_ids(self) -> list[str]:
        """The jobs shown on a gallery page, in order (`data-job-id`)."""
        return re.findall(r'<article class="card" data-job-id="([a-z0-9]{8})"', self.text)

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert match, self.text
        return match[1]


class Visitor:
    """One browser: its own cookies, following no redirects unless asked."""

    def __init__(self, atelier: Atelier) -> None:
        self.atelier = atelier
        self.base = atelier.settings.public_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kwargs: Any) -> Page:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> Page:
        return await self.request("POST", path, data=data, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> Page:
        url = path if path.startswith("http") else self.base + path
        kwargs.setdefault("allow_redirects", False)
        async with self.http.request(method, url, **kwargs) as response:
            body = await response.read()
            text = body.decode("utf-8", "replace") if response.content_type.startswith(
                "text/") else ""
            return Page(response.status, text, response.headers, body)

    async def sign_in(self, user: Member) -> Page:
        """Through `/login`, Discord's authorization page (approving as `user`) and back."""
        double = self.atelier.double
        double.oauth_user = user
        login = await self.get("/login")
        assert login.status == 302, login
        assert login.location.startswith(double.oauth_url), login.location
        authorize = await self.get(login.location)
        assert authorize.status == 302, authorize.text
        back = await self.get(authorize.location)
        assert back.status == 302, back.text
        return back


@pytest_asyncio.fixture
async def visitors(gallery: Atelier) -> AsyncIterator[Any]:
    """`await visitors(user)`: a browser signed in as `user`; `visitors(None)`: signed out."""
    opened: list[Visitor] = []

    async def open_one(user: Member | None) -> Visitor:
        visitor = Visitor(gallery)
        opened.append(visitor)
        if user is not None:
            await visitor.sign_in(user)
        return visitor

    try:
        yield open_one
    finally:
        for visitor in opened:
            await visitor.close()


async def made(atelier: Atelier, prompt: str, user: Member, channel: Channel | None = None,
               **options: Any) -> str:
    """Run `/imagine` as `user` in `channel` (default #general); the finished job's id."""
    handle = await atelier.double.slash("imagine", {"prompt": prompt, **options}, user=user,
                                        channel=channel)
    return job_id_of(await finished(handle))


_pictures = itertools.count(1)


def picture(number: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """A small PNG of its own (so of its own hash), with a `parameters` chunk."""
    image = Image.new("RGB", size, (number * 37 % 256, number * 91 % 256, number * 53 % 256))
    image.putpixel((0, 0), (number % 256, number // 256 % 256, 0))
    return encode_png(image, f"picture {number}\nSeed: {number}")


async def stored_jobs(atelier: Atelier, prompts: Sequence[str], user: Member,
                      channel: Channel | None = None, **fields: Any) -> list[str]:
    """Finished one-picture jobs written through the repository and the image store, as the
    engine leaves them, oldest first (a second apart, ending a minute ago); their ids."""
    bot = atelier.bot
    assert bot is not None
    double = atelier.double
    channel = channel or double.channel
    ids = []
    start = time.time() - 60 - len(prompts)
    for number, prompt in enumerate(prompts):
        guild = double.guild_of(channel)
        values: dict[str, Any] = dict(
            id=new_job_id(), guild_id=guild.id if guild else None, channel_id=channel.id,
            user_id=user.id, kind="imagine", prompt=prompt,
            negative="", model="tiny", sampler="euler", width=64, height=64, steps=4,
            guidance=7.0, seed=number, count=1, created_at=start + number)
        values.update(fields)
        job = await bot.repo.insert_job(JobRecord(**values))
        assert job is not None
        stored = await asyncio.to_thread(bot.store.put, picture(next(_pictures)))
        await bot.repo.complete_job(job.id, [ImageRecord(job.id, 0, job.seed, stored.path,
                                                         stored.sha256, 64, 64,
                                                         stored.size_bytes)])
        ids.append(job.id)
    return ids
