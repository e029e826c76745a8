"""Running jobs: accepting one from an interaction (checked, saved, acknowledged) or from the
gallery (checked, saved, then shown in its channel), queueing it with the executor, storing
what it made, cancelling it, and after a restart taking up the jobs a previous process left
unfinished (same seeds) or undelivered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.delivery import Delivery, Render, Undeliverable
from bot.engine.executor import ExecutorClosed
from bot.engine.prompting import parse_lora_tags
from bot.engine.types import (
    CaptionRequest,
    Control,
    EngineError,
    GenerationRequest,
    GenerationResult,
    JobCancelled,
    Mode,
    Reference,
)
from bot.jobs.making import Origin
from bot.jobs.policy import JobRefused
from bot.jobs.showing import deliver_description, deliver_result, progress_shown
from bot.prompt import PromptError
from bot.replies import answer_error
from bot.ui import cancel_view
from storage import ImageRecord, JobKind, JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

# Tries at showing a finished job's result (one per run of the bot that had it) before Atelier
# stops trying; a permanent refusal (the channel is gone) stops it at once.
MAX_DELIVERY_ATTEMPTS = 10


@dataclass(frozen=True)
class Acknowledged:
    """A command's public "thinking…" answer, which its job's result replaces."""

    placeholder: int | None  # the answer's message id, where Discord gives it


class JobRunner:
    """The jobs of this process: those running, and the bookkeeping around them."""

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._chores: set[asyncio.Task[None]] = set()

    async def accept(self, interaction: discord.Interaction[Any], job: JobRecord, *,
                     mask: bytes | None = None) -> None:
        """Save the job, acknowledge publicly, then run it: the placeholder becomes the result.
        A `mask` (a PNG) is stored with it, as its mask of what to redraw.

        A job the policy refuses gets a private answer and is not saved (nor its mask)."""
        # The interaction acknowledged here is the one whose token shows the job (for a remix,
        # the modal's, not the button's that opened it), and its time starts the token's clock.
        job = replace(job, created_at=time.time(), **Origin.of(interaction).fields())
        refusal = self.bot.policy.refusal_here(interaction)
        if refusal is not None:
            await answer_error(interaction, refusal)
            return
        try:
            job = await self._admit(job, mask)
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

    async def acknowledge(self, interaction: discord.Interaction[Any], job: JobRecord,
                          command: str) -> Acknowledged | None:
        """For a command that fetches pictures before it can save its job: refuse privately
        now what the pictures cannot change (the channel, the user's limits, the server's
        words), then acknowledge publicly, as fetching can outlast the 3 s Discord gives (SPEC
        §6). None: refused, or too late to answer; nothing was saved either way."""
        refusal = self.bot.policy.refusal_here(interaction)
        if refusal is not None:
            await answer_error(interaction, refusal)
            return None
        try:
            await self.bot.policy.check(job)
        except JobRefused as error:
            await answer_error(interaction, f"❌ {error}")
            return None
        try:
            response = await interaction.response.defer(thinking=True)
        except discord.HTTPException:
            log.warning("could not acknowledge %s of %s in time", command, interaction.user)
            return None
        return Acknowledged(response.message_id if response is not None else None)

    async def accept_in_channel(self, job: JobRecord,
                                channel: discord.abc.GuildChannel | discord.Thread | None, *,
                                mask: bytes | None = None) -> JobRecord:
        """Save and run a job asked for outside Discord (the gallery's `Edit`), with no
        interaction to answer: its placeholder and result are messages of their own in its
        channel (`channel`, None for a direct message), the result mentioning its author. A
        `mask` (a PNG) is stored with it. Returns the saved job; raises `JobRefused` where the
        policy refuses it (nothing is saved then, nor its mask)."""
        if channel is not None:
            refusal = self.bot.policy.refusal_in(channel)
            if refusal is not None:
                raise JobRefused(refusal)
        job = await self._admit(replace(job, created_at=time.time(), interaction_token=None,
                                        message_id=None), mask)
        self.start(job)
        return job

    async def _admit(self, job: JobRecord, mask: bytes | None) -> JobRecord:
        """Save `job` under the policy (`JobPolicy.admit`), with its mask stored first."""
        if mask is None:
            return await self.bot.policy.admit(job)
        async with self.bot.housekeeping.upload(mask) as sha256:
            return await self.bot.policy.admit(replace(job, mask_image=sha256))

    def start(self, job: JobRecord, resumed: bool = False) -> None:
        """Run `job` in the background and deliver its result (`resumed`: a job a previous
        process left unfinished)."""
        task = self._track(job.id, self._run(job, resumed))
        if job.pictures:
            task.add_done_callback(lambda _: self._background(self._release_pictures(job)))

    async def _release_pictures(self, job: JobRecord) -> None:
        """A job that ended without pictures no longer needs its uploads (starting picture,
        mask, control picture, references): remove them unless another row refers to them."""
        try:
            ended = await self.bot.repo.job(job.id)
            if ended is None or ended.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                return
            for sha256 in job.pictures:
                await self.bot.housekeeping.release(sha256, besides_job=job.id)
        except Exception:  # a picture kept too many is better than a crash here
            log.exception("could not release the pictures of job %s", job.id)

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
        return True

    async def recover(self) -> int:
        """Run again the jobs a previous process left unfinished (same seeds)."""
        jobs = await self.bot.repo.unfinished_jobs()
        for job in jobs:
            if job.status is JobStatus.DONE and job.delivery_attempts >= MAX_DELIVERY_ATTEMPTS:
                log.warning("job %s: not delivered after %d attempts; no more tries", job.id,
                            job.delivery_attempts)
                await self.bot.repo.give_up_delivery(
                    job.id, f"not delivered after {job.delivery_attempts} attempts")
            elif job.status is JobStatus.DONE:
                log.info("delivering job %s, finished before the restart", job.id)
                self._track(job.id, self._deliver_stored(job))
            else:
                log.info("resuming job %s (%s)", job.id, job.status)
                self.start(job, resumed=True)
        return len(jobs)

    async def wait_idle(self) -> None:
        """Wait for every running job task (tests and shutdown)."""
        while self._tasks or self._chores:
            await asyncio.gather(*self._tasks.values(), *self._chores, return_exceptions=True)

    async def request_for(self, job: JobRecord) -> GenerationRequest:
        """What the engine needs of `job`: its parameters, and the pictures its mode reads."""
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
            mode=Mode(job.mode),
            init_image=await self._picture(job.init_image, "starting picture"),
            strength=job.strength,
            loras=loras,
            box=job.box,
            mask=await self._picture(job.mask_image, "mask"),
            control=await self._control(job),
            reference=await self._reference(job),
        )

    async def _control(self, job: JobRecord) -> Control | None:
        if job.control is None or job.control_image is None:
            return None
        picture = await self._picture(job.control_image, "control image")
        assert picture is not None
        return Control(job.control, picture,
                       1.0 if job.control_weight is None else job.control_weight)

    async def _reference(self, job: JobRecord) -> Reference | None:
        if not job.references:
            return None
        pictures = [await self._picture(sha256, "reference picture")
                    for sha256 in job.references]
        return Reference(tuple(p for p in pictures if p is not None),
                         1.0 if job.image_weight is None else job.image_weight,
                         job.style_weight)

    async def caption_request_for(self, job: JobRecord) -> CaptionRequest:
        """What the engine needs of a `/describe` job: its picture and its sampling seed."""
        picture = await self._picture(job.init_image, "picture")
        if picture is None:
            raise EngineError("This job has no picture to describe")
        return CaptionRequest(job_id=job.id, user_key=str(job.user_id), picture=picture,
                              seed=job.seed, suggestions=job.count)

    async def _picture(self, sha256: str | None, what: str) -> bytes | None:
        if sha256 is None:
            return None
        path = self.bot.store.find(sha256)
        if path is None:
            raise EngineError(f"The {what} of this job is missing from the store")
        return await asyncio.to_thread(path.read_bytes)

    async def _run(self, job: JobRecord, resumed: bool) -> None:
        delivery = Delivery(self.bot, job, resumed)
        try:
            await self._generate_and_deliver(job, delivery)
        except asyncio.CancelledError:
            raise
        except Undeliverable as refusal:
            log.warning("job %s: Discord refuses to show it: %s", job.id, refusal)
        except Exception:
            # A job that made its pictures stays done, undelivered: the next start delivers it
            # (and /recall shows it). Only a job that never got that far fails.
            log.exception("job %s: could not finish or show it", job.id)
            reason = render.INTERNAL_ERROR
            if await self.bot.repo.finish_job(job.id, JobStatus.FAILED, reason):
                await _quietly(delivery.finish(Render(render.failed_text(job, reason),
                                                      notify=True)))

    async def _generate_and_deliver(self, job: JobRecord, delivery: Delivery) -> None:
        on_progress = progress_shown(
            job, delivery, lambda: self._background(self.bot.repo.mark_running(job.id)))
        try:
            if job.kind is JobKind.DESCRIBE:
                captions = await self.bot.executor.submit(
                    await self.caption_request_for(job), on_progress)
                if not await self.bot.repo.complete_description(job.id, captions.suggestions):
                    return  # cancelled meanwhile
                await deliver_description(self.bot.repo, self.bot.store, replace(
                    job, status=JobStatus.DONE, suggestions="\n".join(captions.suggestions)),
                    delivery)
                return
            request = await self.request_for(job)
            result = await self.bot.executor.submit(request, on_progress)
        except ExecutorClosed:
            # Still queued in the database: the next start runs it.
            await _quietly(delivery.pause(Render(render.restarting_text(job),
                                                 view=cancel_view(job.id))))
            return
        except JobCancelled:
            if await self.bot.repo.finish_job(job.id, JobStatus.CANCELLED):
                await delivery.finish(Render(render.cancelled_text(job)))
            return
        except EngineError as error:
            # Its message is written for users (anything else is an internal error, above).
            reason = render.shorten(str(error), render.REASON_MAX)
            if await self.bot.repo.finish_job(job.id, JobStatus.FAILED, reason):
                await delivery.finish(Render(render.failed_text(job, reason), notify=True))
            return

        records = await self._store(job, result)
        notes = render.control_notes(job, job.control is not None
                                     and self.bot.catalogue.annotated(job.control))
        await deliver_result(self.bot.repo, self.bot.store, replace(job, status=JobStatus.DONE),
                             records, delivery, result.prompt_chunks, notes)

    async def _deliver_stored(self, job: JobRecord) -> None:
        """Deliver a job whose images were stored but never shown (the process stopped)."""
        delivery = Delivery(self.bot, job, resumed=True)
        try:
            if job.kind is JobKind.DESCRIBE:
                await deliver_description(self.bot.repo, self.bot.store, job, delivery)
                return
            await deliver_result(self.bot.repo, self.bot.store, job,
                                 await self.bot.repo.images(job.id), delivery)
        except Exception:
            log.exception("could not deliver job %s", job.id)

    async def _store(self, job: JobRecord, result: GenerationResult) -> list[ImageRecord]:
        """Write the files, then the rows: the images are safe before anything is uploaded."""
        def write() -> tuple[list[ImageRecord], str | None]:
            records = []
            for index, image in enumerate(result.images):
                stored = self.bot.store.put(image.png)
                records.append(ImageRecord(job.id, index, image.seed, stored.path, stored.sha256,
                                           image.width, image.height, stored.size_bytes,
                                           image.nsfw))
            control_map = None
            if result.control_map is not None:
                control_map = self.bot.store.put(result.control_map).sha256
            return records, control_map

        records, control_map = await asyncio.to_thread(write)
        await self.bot.repo.complete_job(job.id, records, control_map)
        return records


async def _quietly(awaitable: object) -> None:
    try:
        await awaitable  # type: ignore[misc]
    except Exception:
        log.exception("could not show a failure")
