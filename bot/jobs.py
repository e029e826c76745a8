"""Jobs from start to finish: saved, queued, shown while they run, stored and delivered."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.access import nsfw_allowed
from bot.delivery import Attachment, Delivery, Render
from bot.engine.executor import ExecutorClosed
from bot.engine.samplers import sampler
from bot.engine.types import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    JobCancelled,
    Mode,
    Progress,
)
from bot.imaging import a1111_parameters, compose_grid, decode, encode_png, size_for, veil
from bot.options import JobParameters, image_aspect, random_seed
from bot.prompt import PromptError, parse_lora_tags
from bot.replies import answer_error
from bot.ui import cancel_view, result_view
from storage import ImageRecord, JobRecord, JobStatus, new_job_id

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)


class JobRefused(Exception):
    """A job may not be started; the message says why, for its author."""


class QueueFull(JobRefused):
    """The user already has as many jobs waiting as they may."""


def blocked_word(text: str, words: tuple[str, ...]) -> str | None:
    """The first of `words` that appears in `text` as a whole word (any case), if any."""
    lowered = text.lower()
    for word in words:
        if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", lowered):
            return word
    return None


def _check_words(job: JobRecord, words: tuple[str, ...]) -> None:
    blocked = blocked_word(f"{job.prompt} {job.negative}", words)
    if blocked is not None:
        raise JobRefused(f"The prompt contains a word this server does not allow (`{blocked}`)")


def _queue_full(active: int, limit: int) -> QueueFull:
    return QueueFull(f"You already have {active} job{'s' if active != 1 else ''} queued or "
                     f"running; wait for one to finish (at most {limit} at a time)")


def _rate_limited(limit: int) -> JobRefused:
    return JobRefused(f"You started {limit} jobs in the last minute; wait a moment "
                      f"(at most {limit} a minute)")


class JobService:
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._chores: set[asyncio.Task[None]] = set()

    async def create(self, job: JobRecord) -> JobRecord:
        """Save a new job, enforcing the server's policy and the per-user limits."""
        settings = self.bot.settings
        _check_words(job, settings.blocked_words)
        saved = await self.bot.repo.insert_job(job, settings.max_queue_per_user,
                                               settings.rate_limit_per_minute or None)
        if saved is not None:
            return saved
        active = await self.bot.repo.active_job_count(job.user_id)
        if active >= settings.max_queue_per_user:
            raise _queue_full(active, settings.max_queue_per_user)
        raise _rate_limited(settings.rate_limit_per_minute)

    async def check(self, job: JobRecord) -> None:
        """Refuse `job` now if `create` would, for a command that acknowledges before it has
        all its job needs (a picture to fetch): no file is fetched or stored for a job that
        cannot run. `create` checks again as it saves."""
        settings = self.bot.settings
        _check_words(job, settings.blocked_words)
        active = await self.bot.repo.active_job_count(job.user_id)
        if active >= settings.max_queue_per_user:
            raise _queue_full(active, settings.max_queue_per_user)
        rate = settings.rate_limit_per_minute
        if rate and await self.bot.repo.recent_job_count(job.user_id, job.created_at - 60) >= rate:
            raise _rate_limited(settings.rate_limit_per_minute)

    @staticmethod
    def origin(interaction: discord.Interaction[Any]) -> dict[str, Any]:
        """Who asked, where, and the token to answer them with."""
        return {
            "guild_id": interaction.guild_id,
            "channel_id": interaction.channel_id or 0,
            "user_id": interaction.user.id,
            "nsfw_allowed": nsfw_allowed(interaction),
            "application_id": interaction.application_id,
            "interaction_token": interaction.token,
            "attachment_limit": interaction.filesize_limit,
        }

    def new(self, interaction: discord.Interaction[Any], params: JobParameters,
            init_image: str | None = None) -> JobRecord:
        """A new `/imagine` job for whoever sent `interaction`."""
        return JobRecord(id=new_job_id(), kind="imagine", created_at=time.time(),
                         init_image=init_image, **params.job_fields(),
                         **self.origin(interaction))

    def derive(self, interaction: discord.Interaction[Any], parent: JobRecord, kind: str, *,
               count: int, index: int | None = None, init_image: str | None = None,
               strength: float | None = None, scale: int = 1) -> JobRecord:
        """A new job continuing from `parent`, for whoever pressed, always with fresh seeds."""
        width, height = parent.width * scale, parent.height * scale
        if kind == "variation" and parent.kind == "upscale":
            # Variations of an upscaled picture are made at the model's own size, not at twice
            # it (four of those would be slow, and tiled).
            family = self.bot.catalogue.get(
                parent.model if parent.model in self.bot.catalogue.names() else None).family
            width, height = size_for(image_aspect(parent.width, parent.height),
                                     family.native_side, family.multiple)
        return replace(
            parent,
            id=new_job_id(),
            kind=kind,
            parent_job=parent.id,
            parent_index=index,
            seed=random_seed(count),
            count=count,
            init_image=init_image,
            strength=strength,
            width=width,
            height=height,
            status=JobStatus.QUEUED,
            error=None,
            message_id=None,
            created_at=time.time(),
            started_at=None,
            finished_at=None,
            delivered_at=None,
            deleted_at=None,
            **self.origin(interaction),
        )

    @staticmethod
    def remixed(job: JobRecord, params: JobParameters) -> JobRecord:
        """`job` with what the user wrote in the remix modal."""
        fields = params.job_fields()
        if job.init_image is None:
            fields["strength"] = None
        return replace(job, **fields)

    async def submit(self, interaction: discord.Interaction[Any], job: JobRecord) -> None:
        """Save the job, acknowledge publicly, then run it: the placeholder becomes the result.

        A user over the queue limit gets a private answer and no job."""
        # The interaction acknowledged here is the one whose token shows the job (for a remix,
        # the modal's, not the button's that opened it), and its time starts the token's clock.
        job = replace(job, created_at=time.time(), **self.origin(interaction))
        refusal = self.bot.refusal_here(interaction)
        if refusal is not None:
            await answer_error(interaction, refusal)
            return
        try:
            job = await self.create(job)
        except JobRefused as error:
            await answer_error(interaction, f"❌ {error}")
            return
        try:
            response = await interaction.response.defer(thinking=True)
        except (discord.HTTPException, discord.InteractionResponded):
            response = None  # the interaction is gone: the job runs and is posted in the channel
        if response is not None and response.message_id is not None:
            job = replace(job, message_id=response.message_id)
            await self.bot.repo.set_message(job.id, response.message_id)
        else:
            job = replace(job, interaction_token=None)
        self.start(job)

    def start(self, job: JobRecord) -> None:
        """Run `job` in the background and deliver its result."""
        task = self._track(job.id, self._run(job))
        if job.init_image is not None:
            task.add_done_callback(lambda _: self._background(self._release_start(job)))

    async def _release_start(self, job: JobRecord) -> None:
        """A job that ended without pictures no longer needs its starting picture: remove it
        unless another row refers to it (an upload is used by its job alone)."""
        assert job.init_image is not None
        try:
            ended = await self.bot.repo.job(job.id)
            if ended is not None and ended.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                await self.bot.housekeeping.release(job.init_image, besides_job=job.id)
        except Exception:  # a picture kept too many is better than a crash here
            log.exception("could not release the starting picture of job %s", job.id)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Bookkeeping that must not hold up a job (kept referenced until it is done)."""
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _track(self, job_id: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` for a job as a task that `wait_idle` and `cancel` can find."""
        task = asyncio.create_task(work, name=f"job-{job_id}")
        self._tasks[job_id] = task

        def forget(_: asyncio.Task[None]) -> None:
            self._tasks.pop(job_id, None)

        task.add_done_callback(forget)
        return task

    async def cancel(self, job: JobRecord) -> bool:
        """Cancel a queued or running job; False when it has already finished."""
        if self.bot.executor.cancel(job.id):
            return True
        # Saved but not (or no longer) with the executor: just after a restart, or finished and
        # being stored. Only a job that has not ended can be cancelled.
        if not await self.bot.repo.finish_job(job.id, JobStatus.CANCELLED):
            return False
        task = self._tasks.get(job.id)
        if task is not None:
            task.cancel()
        current = await self.bot.repo.job(job.id) or job
        await Delivery(self.bot, current).finish(Render(render.cancelled_text(current)))
        await self.bot.repo.set_delivered(job.id, None)
        return True

    async def recover(self) -> int:
        """Run again the jobs a previous process left unfinished (same seeds)."""
        jobs = await self.bot.repo.unfinished_jobs()
        for job in jobs:
            if job.status is JobStatus.DONE:
                log.info("delivering job %s, finished before the restart", job.id)
                self._track(job.id, self._deliver_stored(job))
            else:
                log.info("resuming job %s (%s)", job.id, job.status)
                self.start(job)
        return len(jobs)

    async def wait_idle(self) -> None:
        """Wait for every running job task (tests and shutdown)."""
        while self._tasks or self._chores:
            await asyncio.gather(*self._tasks.values(), *self._chores, return_exceptions=True)

    async def request_for(self, job: JobRecord) -> GenerationRequest:
        init_image = None
        if job.init_image is not None:
            path = self.bot.store.find(job.init_image)
            if path is None:
                raise EngineError("The starting picture of this job is missing from the store")
            init_image = await asyncio.to_thread(path.read_bytes)
        try:
            loras = tuple(sorted(parse_lora_tags(job.prompt)))
        except PromptError as error:  # a prompt saved before LoRA tags were understood
            raise EngineError(str(error)) from None
        return GenerationRequest(
            job_id=job.id,
            user_key=str(job.user_id),
            model=job.model,
            prompt=job.prompt,
            negative=job.negative,
            width=job.width,
            height=job.height,
            steps=job.steps,
            guidance=job.guidance,
            sampler=job.sampler,
            seeds=tuple(job.seeds),
            mode=Mode.TXT2IMG if init_image is None else Mode.IMG2IMG,
            init_image=init_image,
            strength=job.strength,
            loras=loras,
        )

    async def _run(self, job: JobRecord) -> None:
        delivery = Delivery(self.bot, job)
        try:
            await self._generate_and_deliver(job, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A job that made its pictures stays done, undelivered: the next start delivers it
            # (and /recall shows it). Only a job that never got that far fails.
            log.exception("job %s: could not finish or show it", job.id)
            if await self.bot.repo.finish_job(job.id, JobStatus.FAILED, "internal error"):
                await _quietly(delivery.finish(Render(render.failed_text(job, "internal error"))))

    async def _generate_and_deliver(self, job: JobRecord, delivery: Delivery) -> None:
        marked_running = False
        preview: tuple[Attachment, ...] = ()

        def on_progress(progress: Progress) -> None:
            nonlocal marked_running, preview
            if progress.state == "queued":
                delivery.update(Render(render.queued_text(job, progress.position,
                                                          progress.loading),
                                       view=cancel_view(job.id)))
                return
            if not marked_running:
                marked_running = True
                self._background(self.bot.repo.mark_running(job.id))
            if progress.step == 0:
                if progress.loading:
                    delivery.update(Render(render.starting_text(job, progress.loading),
                                           view=cancel_view(job.id)))
                return
            if progress.preview is not None:
                # Kept for the following updates too: only some steps come with a new preview.
                preview = (Attachment("preview.png", progress.preview),)
            delivery.update(Render(render.progress_text(job, progress.step, progress.total),
                                   preview, cancel_view(job.id)))

        try:
            request = await self.request_for(job)
            result = await self.bot.executor.submit(request, on_progress)
        except ExecutorClosed:
            # Still queued in the database: the next start runs it.
            await _quietly(delivery.finish(Render(render.restarting_text(job),
                                                  view=cancel_view(job.id))))
            return
        except JobCancelled:
            if await self.bot.repo.finish_job(job.id, JobStatus.CANCELLED):
                await self.bot.repo.set_delivered(
                    job.id, await delivery.finish(Render(render.cancelled_text(job))))
            return
        except EngineError as error:
            if await self.bot.repo.finish_job(job.id, JobStatus.FAILED, str(error)):
                await self.bot.repo.set_delivered(
                    job.id, await delivery.finish(Render(render.failed_text(job, str(error)))))
            return

        records = await self._store(job, result)
        await self._deliver_result(replace(job, status=JobStatus.DONE), records, delivery,
                                   result.prompt_chunks)

    async def _deliver_result(self, job: JobRecord, images: list[ImageRecord],
                              delivery: Delivery, prompt_chunks: int = 1) -> None:
        render_ = await self.result_render(job, images, prompt_chunks)
        message_id = await delivery.finish(render_)
        await self.bot.repo.set_delivered(job.id, message_id)

    async def _deliver_stored(self, job: JobRecord) -> None:
        """Deliver a job whose images were stored but never shown (the process stopped)."""
        delivery = Delivery(self.bot, job)
        try:
            await self._deliver_result(job, await self.bot.repo.images(job.id), delivery)
        except Exception:
            log.exception("could not deliver job %s", job.id)

    async def result_render(self, job: JobRecord, images: list[ImageRecord],
                            prompt_chunks: int = 1) -> Render:
        """The finished job as users see it: its grid (or single picture), text and buttons.

        Pictures the safety checker flagged are veiled unless the channel is marked NSFW; a
        prompt longer than CLIP's 77 tokens gets a note that it was encoded in chunks."""
        def build() -> bytes:
            pictures = [self.bot.store.read(image.path) for image in images]
            hidden = [image.nsfw and not job.nsfw_allowed for image in images]
            if len(pictures) == 1 and not hidden[0]:
                return pictures[0]
            cells = [veil(decode(data)) if flagged else decode(data)
                     for data, flagged in zip(pictures, hidden, strict=True)]
            first = images[0]
            parameters = a1111_parameters(
                prompt=job.prompt, negative=job.negative, steps=job.steps,
                sampler=sampler(job.sampler).label, guidance=job.guidance, seed=first.seed,
                width=first.width, height=first.height, model=job.model, strength=job.strength,
            )
            return encode_png(compose_grid(cells), parameters)

        grid = await asyncio.to_thread(build)
        hidden = [image.index + 1 for image in images if image.nsfw and not job.nsfw_allowed]
        filename = f"atelier_{job.id}.png"
        if hidden:
            filename = "SPOILER_" + filename
        return Render(render.result_text(job, hidden, prompt_chunks),
                      (Attachment(filename, grid),), result_view(job.id, len(images)))

    async def _store(self, job: JobRecord, result: GenerationResult) -> list[ImageRecord]:
        """Write the files, then the rows: the images are safe before anything is uploaded."""
        def write() -> list[ImageRecord]:
            records = []
            for index, image in enumerate(result.images):
                stored = self.bot.store.put(image.png)
                records.append(ImageRecord(job.id, index, image.seed, stored.path, stored.sha256,
                                           image.width, image.height, stored.size_bytes,
                                           image.nsfw))
            return records

        records = await asyncio.to_thread(write)
        await self.bot.repo.complete_job(job.id, records)
        return records


async def _quietly(awaitable: object) -> None:
    try:
        await awaitable  # type: ignore[misc]
    except Exception:
        log.exception("could not show a failure")
