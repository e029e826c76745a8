"""Showing a job: what its message says while it waits and runs (position, step, a preview), and
its result (the grid or single picture, its line of text, its buttons). The words themselves
are in `bot.render`; `bot.delivery` gets them to Discord."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from bot import render
from bot.delivery import Attachment, Delivery, Render, Undeliverable
from bot.engine.types import Progress
from bot.imaging import compose_grid, decode, encode_png, veil
from bot.ui import cancel_view, describe_view, result_view
from storage import ImageRecord, ImageStore, JobRecord, Repository

log = logging.getLogger(__name__)


def progress_shown(job: JobRecord, delivery: Delivery,
                   started: Callable[[], None]) -> Callable[[Progress], None]:
    """What the executor's progress of `job` does to its message: `Queued — position N`, then
    `step k/N` with the latest preview. `started` is called once, at the first step."""
    preview: tuple[Attachment, ...] = ()
    running = False

    def on_progress(progress: Progress) -> None:
        nonlocal preview, running
        if progress.state == "queued":
            delivery.update(Render(
                render.queued_text(job, progress.position, progress.engine_retrying,
                                   progress.loading),
                view=cancel_view(job.id)))
            return
        if not running:
            running = True
            started()
        if progress.step == 0:
            if progress.loading:  # its turn has come, and its model is loading
                delivery.update(Render(render.starting_text(job, progress.loading),
                                       view=cancel_view(job.id)))
            return
        if progress.preview is not None:
            # Kept for the following updates too: only some steps come with a new preview.
            preview = (Attachment("preview.png", progress.preview),)
        delivery.update(Render(render.progress_text(job, progress.step, progress.total),
                               preview, cancel_view(job.id)))

    return on_progress


async def result_render(store: ImageStore, job: JobRecord, images: list[ImageRecord],
                        prompt_chunks: int = 1, notes: Sequence[str] = ()) -> Render:
    """The finished job as users see it: its grid (or single picture), text and buttons.

    Pictures the safety checker flagged are veiled unless the channel is marked NSFW; a prompt
    longer than CLIP's 77 tokens gets a note that it was encoded in chunks."""
    def build() -> bytes:
        pictures = [store.read(image.path) for image in images]
        hidden = [image.nsfw and not job.nsfw_allowed for image in images]
        if len(pictures) == 1 and not hidden[0]:
            return pictures[0]
        decoded = [decode(data) for data in pictures]
        cells = [veil(picture) if flagged else picture
                 for picture, flagged in zip(decoded, hidden, strict=True)]
        # The grid carries the first picture's own `parameters`, as the engine wrote them.
        return encode_png(compose_grid(cells), decoded[0].info.get("parameters"))

    grid = await asyncio.to_thread(build)
    hidden = [image.index + 1 for image in images if image.nsfw and not job.nsfw_allowed]
    filename = f"atelier_{job.id}.png"
    if hidden:
        filename = "SPOILER_" + filename
    return Render(render.result_text(job, hidden, prompt_chunks, notes),
                  (Attachment(filename, grid),),
                  result_view(job.id, len(images), draft=job.draft is not None),
                  notify=True)


async def deliver_result(repo: Repository, store: ImageStore, job: JobRecord,
                         images: list[ImageRecord], delivery: Delivery,
                         prompt_chunks: int = 1, notes: Sequence[str] = ()) -> None:
    """Show a finished job's result, counting the try; a job Discord refuses to show for good
    (its channel is gone, the bot may not post there) is not tried again."""
    await _deliver(repo, job, delivery,
                   await result_render(store, job, images, prompt_chunks, notes))


async def deliver_description(repo: Repository, store: ImageStore, job: JobRecord,
                              delivery: Delivery) -> None:
    """Show a finished `/describe`: the picture, its numbered suggestions and their buttons."""
    attachments: tuple[Attachment, ...] = ()
    path = store.find(job.init_image) if job.init_image is not None else None
    if path is not None:
        data = await asyncio.to_thread(path.read_bytes)
        attachments = (Attachment(f"atelier_{job.id}.png", data),)
    await _deliver(repo, job, delivery, Render(render.description_text(job), attachments,
                                               describe_view(job.id), notify=True))


async def _deliver(repo: Repository, job: JobRecord, delivery: Delivery, shown: Render) -> None:
    attempt = await repo.count_delivery_attempt(job.id)
    try:
        await delivery.finish(shown)
    except Undeliverable as refusal:
        log.warning("job %s: Discord refuses to show its result (try %d): %s; no more tries",
                    job.id, attempt, refusal)
        await repo.give_up_delivery(job.id, str(refusal))
