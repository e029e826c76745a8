"""`/history`: the finished jobs of this server the member may see (those of the channels they
can view, and their own), nine to a page, as a numbered contact sheet and list, with `◀` `▶` to
turn pages and `Open…` to recall one; answered privately."""

from __future__ import annotations

import asyncio
import io
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.access import nsfw_allowed, scope_of
from bot.replies import answer_error
from bot.thumbnails import Thumbnails
from bot.ui import Action, Press, dispatch
from storage import JobRecord

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

PAGE_SIZE = 9
SEARCH_MAX = 200
PROMPT_SHOWN = 60  # characters of a prompt in the list
SEARCH_SHOWN = 50  # characters of the search text in the heading
OPTION_MAX = 100  # Discord's limit on a select option's label
OPEN_ID = "atelier:h:open"


@dataclass(frozen=True)
class Filters:
    """Which jobs a history message lists; a `◀` `▶` button carries them in its custom id."""

    user_id: int | None = None
    favourites: bool = False  # only the jobs the viewer marked ❤️
    search_key: str | None = None  # names the search text, kept in the database

    def custom_id(self, page: int) -> str:
        """`atelier:h:<page>:<user>:<f>:<search>`, `-` where a filter is off: 57 characters at
        most."""
        return (f"atelier:h:{page}:{self.user_id or '-'}:{'f' if self.favourites else '-'}"
                f":{self.search_key or '-'}")


@dataclass(frozen=True)
class Listing:
    """One page of history: its jobs, where it is, and what it was filtered by."""

    jobs: list[JobRecord]
    total: int
    page: int
    filters: Filters
    search: str
    deleted: dict[str, tuple[int, ...]] = field(default_factory=dict)  # pictures whose message
    # was deleted (from 0), by job id

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / PAGE_SIZE))


def age_text(seconds: float) -> str:
    """`just now`, `3 min ago`, `5 h ago`, `2 days ago`, `4 months ago`, `2 years ago`."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 24 * 60:
        return f"{minutes // 60} h ago"
    days = minutes // (24 * 60)
    if days < 60:
        return f"{days} day{'s' if days != 1 else ''} ago"
    if days < 730:
        return f"{days // 30} months ago"
    return f"{days // 365} years ago"


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def filter_texts(filters: Filters, search: str) -> list[str]:
    """`by @someone`, `matching `fox``, `❤️ favourites`: the filters in force."""
    texts = []
    if filters.user_id is not None:
        texts.append(f"by <@{filters.user_id}>")
    if search:
        texts.append(f"matching `{shorten(search, SEARCH_SHOWN).replace('`', '')}`")
    if filters.favourites:
        texts.append("your ❤️ favourites")
    return texts


def nothing_found_text(filters: Filters, search: str) -> str:
    texts = filter_texts(filters, search)
    return "No finished jobs found" + (" — " + ", ".join(texts) if texts else "") + "."


def job_line(number: int, job: JobRecord, now: float, deleted: Sequence[int] = ()) -> str:
    """`3. **a red fox** — @alice · 3 min ago · `k3f9x2ab``, and `(message of image 2 deleted)`
    when the message of one of its pictures (`deleted`, from 0) was deleted."""
    prompt = discord.utils.escape_mentions(
        discord.utils.escape_markdown(shorten(render.title(job), PROMPT_SHOWN)))
    note = f" ({render.deleted_pictures_text(deleted)})" if deleted else ""
    return (f"{number}. **{prompt}** — <@{job.user_id}> · {age_text(now - job.created_at)}"
            f" · `{job.id}`{note}")


def listing_text(listing: Listing, now: float) -> str:
    heading = (f"**History** — page {listing.page} of {listing.pages} · {listing.total} "
               f"job{'s' if listing.total != 1 else ''}")
    heading += "".join(f" · {text}" for text in filter_texts(listing.filters, listing.search))
    lines = [job_line(number, job, now, listing.deleted.get(job.id, ()))
             for number, job in enumerate(listing.jobs, start=1)]
    return "\n".join([heading, *lines])


PAGE_ID = re.compile(r"atelier:h:(?P<page>\d{1,7}):(?P<user>\d{1,20}|-):(?P<fav>[f-])"
                     r":(?P<search>[0-9a-f]{16}|-)")


def page_of(custom_id: str) -> tuple[Filters, int] | None:
    """The filters and page a `◀` `▶` custom id names, or None when it names none."""
    match = PAGE_ID.fullmatch(custom_id)
    if match is None:
        return None
    filters = Filters(
        user_id=None if match["user"] == "-" else int(match["user"]),
        favourites=match["fav"] == "f",
        search_key=None if match["search"] == "-" else match["search"],
    )
    return filters, int(match["page"])


class PageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=PAGE_ID.pattern):
    """`◀` or `▶` on a history message: the page it turns to and the filters, in its custom id."""

    def __init__(self, label: str, page: int, filters: Filters, enabled: bool = True) -> None:
        super().__init__(discord.ui.Button(label=label, custom_id=filters.custom_id(page),
                                           disabled=not enabled, row=0))
        self.page = page
        self.filters = filters

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> PageButton:
        found = page_of(match[0])
        assert found is not None  # the same pattern matched
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(label or "", found[1], found[0])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await dispatch(interaction, Action.HISTORY_PAGE,
                       Press(detail=self.filters.custom_id(self.page)))


class OpenMenu(discord.ui.DynamicItem[discord.ui.Select[Any]], template=OPEN_ID):
    """`Open…` on a history message: posts the picked job again, publicly, like `/recall`."""

    def __init__(self, options: list[discord.SelectOption]) -> None:
        super().__init__(discord.ui.Select(custom_id=OPEN_ID, placeholder="Open…",
                                           options=options, row=1))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> OpenMenu:
        return cls(list(item.options) if isinstance(item, discord.ui.Select) else [])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await dispatch(interaction, Action.HISTORY_OPEN, Press(values=tuple(self.item.values)))


def listing_view(listing: Listing) -> discord.ui.View:
    """`◀` `▶` (disabled at the ends), and `Open…` with one option per job listed."""
    view = discord.ui.View(timeout=None)
    view.add_item(PageButton("◀", listing.page - 1, listing.filters, listing.page > 1))
    view.add_item(PageButton("▶", listing.page + 1, listing.filters,
                             listing.page < listing.pages))
    view.add_item(OpenMenu([
        discord.SelectOption(label=shorten(f"{number}. {render.title(job)}", OPTION_MAX),
                             value=job.id, description=f"job {job.id}")
        for number, job in enumerate(listing.jobs, start=1)
    ]))
    return view


class History(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.thumbnails = Thumbnails(bot.store, bot.settings.thumbnails_dir)
        bot.buttons.register({Action.HISTORY_PAGE: self.on_page})

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(Action.HISTORY_PAGE)
        self.bot.remove_dynamic_items(PageButton, OpenMenu)

    @app_commands.command(name="history")
    @app_commands.describe(
        user="Only jobs by this member",
        search='Words of the prompt; "quotes" for a phrase, the last word also matches its start',
        page="Which page of nine (1 is the newest)",
        favourites="Only the jobs you marked ❤️",
    )
    async def history(
        self,
        interaction: Interaction,
        user: discord.User | None = None,
        search: app_commands.Range[str, 1, SEARCH_MAX] | None = None,
        page: app_commands.Range[int, 1] = 1,
        favourites: bool = False,
    ) -> None:
        """Browse this server's images, newest first, nine to a page."""
        text = " ".join(search.split()) if search else ""
        filters = Filters(
            user_id=user.id if user is not None else None,
            favourites=favourites,
            search_key=await self.bot.repo.save_search(text) if text else None,
        )
        listing = await self.listing(interaction, filters, text, page)
        if listing.total == 0:
            await answer_error(interaction, nothing_found_text(filters, text))
            return
        if page > listing.pages:
            await answer_error(interaction, f"There {'is' if listing.pages == 1 else 'are'} "
                                            f"only {listing.pages} page"
                                            f"{'s' if listing.pages != 1 else ''}.")
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.show(interaction, listing)

    async def on_page(self, interaction: Interaction, press: Press) -> None:
        """`◀` `▶`: show another page in the same message (the last one if it has moved)."""
        found = page_of(press.detail or "")
        if found is None:
            await answer_error(interaction, "This button no longer works; run `/history` again.")
            return
        await self.turn_page(interaction, *found)

    async def turn_page(self, interaction: Interaction, filters: Filters, page: int) -> None:
        """Show page `page` of the jobs through `filters` in the message of `interaction`."""
        search = ""
        if filters.search_key is not None:
            saved = await self.bot.repo.saved_search(filters.search_key)
            if saved is None:
                await answer_error(interaction, "This search is gone; run `/history` again.")
                return
            search = saved
        listing = await self.listing(interaction, filters, search, max(1, page))
        if listing.total == 0:
            await interaction.response.edit_message(
                content=nothing_found_text(filters, search), attachments=[], view=None)
            return
        if listing.page > listing.pages:
            listing = await self.listing(interaction, filters, search, listing.pages)
        await interaction.response.defer()
        await self.show(interaction, listing)

    async def listing(self, interaction: Interaction, filters: Filters, search: str,
                      page: int) -> Listing:
        """Page `page` of the jobs this interaction may see, through `filters`."""
        jobs, total = await self.bot.repo.history(
            scope_of(interaction),
            user_id=filters.user_id,
            search=search or None,
            favourites_of=interaction.user.id if filters.favourites else None,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
        deleted = await self.bot.repo.deleted_pictures([job.id for job in jobs])
        return Listing(jobs, total, page, filters, search, deleted)

    async def show(self, interaction: Interaction, listing: Listing) -> None:
        """Fill the (deferred) message with the listing's contact sheet, list and controls."""
        first = await self.bot.repo.first_images([job.id for job in listing.jobs])
        images = [first.get(job.id) for job in listing.jobs]
        # Outside NSFW channels, pictures the safety checker flagged and every picture made in
        # an NSFW channel are veiled.
        here_nsfw = nsfw_allowed(interaction)
        veiled = [not here_nsfw and (job.nsfw_allowed or (image is not None and image.nsfw))
                  for job, image in zip(listing.jobs, images, strict=True)]
        sheet = await asyncio.to_thread(self.thumbnails.contact_sheet, images, veiled)
        await interaction.edit_original_response(
            content=listing_text(listing, time.time()),
            attachments=[discord.File(io.BytesIO(sheet), filename="history.jpg")],
            view=listing_view(listing),
        )


async def setup(bot: AtelierBot) -> None:
    bot.add_dynamic_items(PageButton, OpenMenu)
    await bot.add_cog(History(bot))
