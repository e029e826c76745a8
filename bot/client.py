"""The bot: a typed `commands.Bot` that owns the database, the image store and the executor."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import limits
from bot.access import PostLimit
from bot.catalogue import Catalogue
from bot.config import ConfigError, Settings
from bot.engine.executor import Executor, LocalExecutor
from bot.engine.types import GenerationRequest
from bot.engine.worker import Worker, WorkerConfig, gpu_problem, import_libraries
from bot.housekeeping import Housekeeping
from bot.jobs import JobPolicy, JobRunner
from bot.loopwatch import LoopWatch
from bot.permissions import invite_url, server_report
from bot.replies import OUR_FAULT, answer_error
from bot.ui import DYNAMIC_ITEMS, STALE_BUTTON, ButtonRouter
from storage import ImageStore, Repository, open_database
from web import Gallery

log = logging.getLogger(__name__)

UNANSWERED_AFTER = 2.5  # seconds; Discord gives up on an interaction after 3

EXTENSIONS = (
    "cogs.imagine",
    "cogs.studio",
    "cogs.edit",
    "cogs.collection",
    "cogs.history",
    "cogs.recall",
    "cogs.info",
    "cogs.settings",
    "cogs.image_info",
    "cogs.blend",
    "cogs.describe",
)


def point_at(api_base: str | None, gateway_url: str | None) -> None:
    """Send REST calls and the gateway connection somewhere other than Discord (a proxy, a
    test double). discord.py reads both class attributes each time it builds a request."""
    if api_base:
        discord.http.Route.BASE = api_base
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def quiet_voice_warnings() -> None:
    """Atelier never joins voice: discord.py's warnings that voice libraries are missing would
    only read as a problem to someone starting it for the first time."""
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False


class AtelierTree(app_commands.CommandTree["AtelierBot"]):
    async def interaction_check(self, interaction: discord.Interaction[AtelierBot]) -> bool:
        """Commands answer only where the server allows them (`ALLOWED_CHANNELS`)."""
        refusal = interaction.client.policy.channel_refusal(interaction)
        if refusal is None:
            return True
        if interaction.type is discord.InteractionType.autocomplete:
            return False
        await answer_error(interaction, refusal)
        return False

    async def on_error(self, interaction: discord.Interaction[AtelierBot],
                       error: app_commands.AppCommandError) -> None:
        """Log the traceback; tell the user privately that it was our fault."""
        log.error("command %s failed", interaction.command and interaction.command.name,
                  exc_info=error)
        await answer_error(interaction, OUR_FAULT)


class AtelierBot(commands.Bot):
    repo: Repository
    store: ImageStore
    executor: Executor
    policy: JobPolicy
    jobs: JobRunner
    housekeeping: Housekeeping
    gallery: Gallery

    def __init__(self, settings: Settings) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # no privileged intents: everything arrives as interactions
        quiet_voice_warnings()
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=settings.guild_ready_timeout,
            tree_cls=AtelierTree,
        )
        self.settings = settings
        self.catalogue = Catalogue.from_settings(settings)
        self.buttons = ButtonRouter()  # what each button does, registered by the cogs
        self.public_posts = PostLimit(limits.PUBLIC_POSTS_PER_MINUTE)
        self.started_at = time.time()
        self.loop_watch = LoopWatch()
        point_at(settings.discord_api_base, settings.discord_gateway_url)

    async def setup_hook(self) -> None:
        self.loop_watch.start()
        self.repo = Repository(await open_database(self.settings.database_path))
        self.store = ImageStore(self.settings.images_dir)
        self.housekeeping = Housekeeping(self.store, self.repo, self.settings.thumbnails_dir)
        # Beside the start-up, not before it: a large store takes a while to walk.
        self._sweep = asyncio.create_task(self.housekeeping.sweep(), name="sweep")
        if self.settings.executor == "local":
            seconds = await asyncio.to_thread(import_libraries)
            log.info("imported torch and diffusers in %.1f s", seconds)
            await self._check_gpu()
            # The libraries leave a million objects that live as long as the process. A full
            # garbage collection walks them all while holding the GIL (a quarter of a second
            # here, whenever the engine frees a model), and the event loop waits meanwhile;
            # frozen, collections skip them.
            gc.freeze()
        self.executor = self._make_executor()
        self.executor.start()
        self.policy = JobPolicy(self.settings, self.repo)
        self.jobs = JobRunner(self)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except commands.ExtensionError:
                log.exception("could not load %s", extension)
        unhandled = self.buttons.missing()
        if unhandled:  # a feature failed to load: its buttons answer that they are unavailable
            log.error("no handler for the buttons %s", ", ".join(a.name for a in unhandled))
        await self._sync_commands()
        self.gallery = Gallery(self)
        await self.gallery.start()
        resumed = await self.jobs.recover()
        if resumed:
            log.info("resumed %d unfinished jobs", resumed)

    async def _check_gpu(self) -> None:
        """Say in one line when this machine has an NVIDIA GPU that torch cannot use, and stop
        unless SD_DEVICE=cpu asks for the CPU."""
        problem = await asyncio.to_thread(gpu_problem)
        if problem is None:
            return
        if self.settings.sd_device in ("auto", "cuda"):
            raise ConfigError(f"{problem}; or set SD_DEVICE=cpu to run on the CPU "
                              f"(SD_DEVICE={self.settings.sd_device} does not fall back to it)")
        log.warning("%s; running on the CPU as SD_DEVICE=%s says", problem,
                    self.settings.sd_device)

    def _make_executor(self) -> Executor:
        settings = self.settings
        config = WorkerConfig(
            models=tuple(self.catalogue),
            device=settings.sd_device,
            dtype=settings.sd_dtype,
            models_loaded=settings.sd_models_loaded,
            max_batch=settings.max_batch,
            cache_dir=str(settings.data_dir / "models"),
            compile=settings.sd_compile,
            lora_dir=str(settings.lora_dir) if settings.lora_dir is not None else None,
            adapters=self.catalogue.adapters,
            offload=settings.sd_offload,
        )
        default = self.catalogue.default
        warm_up = GenerationRequest(
            job_id="warm-up", user_key="", model=default.name, prompt="warm up", negative="",
            width=default.family.native_side, height=default.family.native_side, steps=2,
            guidance=default.family.guidance, sampler=default.family.sampler, seeds=(0,),
        )
        if settings.executor == "ray":
            from bot.engine.ray_executor import RayExecutor

            try:
                import ray  # noqa: F401  (an optional dependency: `pip install .[ray]`)
            except ImportError:
                raise ConfigError("EXECUTOR=ray needs Ray: pip install '.[ray]'") from None
            return RayExecutor(config, settings.max_batch, warm_up=warm_up,
                               address=settings.ray_address, workers=settings.ray_workers,
                               start_timeout=settings.engine_start_timeout)
        return LocalExecutor(lambda: Worker(config), settings.max_batch, warm_up=warm_up,
                             start_timeout=settings.engine_start_timeout)

    async def _sync_commands(self) -> None:
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            try:
                synced = await self.tree.sync(guild=guild)
            except discord.Forbidden as error:
                assert self.application_id is not None
                raise ConfigError(
                    f"Discord refused the commands for DEV_GUILD_ID={guild.id} ({error.text}): "
                    "the bot must be in that server, invited with the applications.commands "
                    f"scope: {invite_url(self.application_id)}") from error
            log.info("synced %d commands to server %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))

    async def on_interaction(self, interaction: discord.Interaction[AtelierBot]) -> None:
        """Answer presses of our buttons that nothing handled (stale or crafted custom ids)
        before Discord's 3 s run out, instead of leaving it to say "This interaction failed"."""
        if interaction.type is not discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        if not str(data.get("custom_id", "")).startswith("atelier:"):
            return
        await asyncio.sleep(UNANSWERED_AFTER)
        if not interaction.response.is_done():
            await answer_error(interaction, STALE_BUTTON)

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("ready as %s (%s) in %d servers", self.user, self.user.id, len(self.guilds))
        if not self.guilds and self.application_id is not None:
            log.warning("Atelier is in no server yet: open this link to add it to one: %s",
                        invite_url(self.application_id))
        for guild in self.guilds:
            if guild.me is None:  # not in the cache (yet): nothing to judge by
                continue
            report = server_report(guild.me, guild.channels, self.settings.allowed_channels)
            if not report.fine:
                log.warning("server %s: %s", guild.name, report.describe())

    async def close(self) -> None:
        self.loop_watch.stop()
        if hasattr(self, "gallery"):
            await self.gallery.close()
        if hasattr(self, "executor"):
            await self.executor.close()
        if hasattr(self, "jobs"):
            await self.jobs.wait_idle()
        if hasattr(self, "_sweep"):
            self._sweep.cancel()  # the next start sweeps again
            await asyncio.gather(self._sweep, return_exceptions=True)
        await super().close()
        if hasattr(self, "repo"):
            await self.repo.close()
