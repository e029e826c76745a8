"""Rows as frozen dataclasses: what the repository returns and takes."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

_ID_FIRST = string.ascii_lowercase
_ID_REST = string.ascii_lowercase + string.digits


def new_job_id() -> str:
    """A short job token like `k3f9x2ab`: 8 characters, never all digits (so never a number)."""
    return secrets.choice(_ID_FIRST) + "".join(secrets.choice(_ID_REST) for _ in range(7))


class JobKind(StrEnum):
    """What made a job. The database's `job_kinds` table holds the same names: a new kind is one
    line here and one row added by a migration."""

    IMAGINE = "imagine"  # /imagine
    REROLL = "reroll"  # 🔄
    VARIATION = "variation"  # V<n>, Vary (Subtle), Vary (Strong)
    UPSCALE = "upscale"  # Upscale (2x)
    ZOOM = "zoom"  # Zoom Out 2x, Zoom Out 1.5x, Custom Zoom
    PAN = "pan"  # ⬅️ ➡️ ⬆️ ⬇️
    SQUARE = "square"  # Make Square
    REGION = "region"  # Vary (Region)
    ENHANCE = "enhance"  # Enhance: a draft's picture at full quality
    BLEND = "blend"  # /blend
    DESCRIBE = "describe"  # /describe: prompt suggestions, no pictures


JOB_KINDS = tuple(JobKind)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Scope:
    """Whose jobs a request may see (SPEC §6 Visibility): in a server, the jobs made in the
    channels the user can view, and their own; in direct messages, only their own DM jobs."""

    guild_id: int | None
    user_id: int
    # The server's channels (and threads) the user can view; unset, only their own jobs.
    channel_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class JobRecord:
    id: str
    guild_id: int | None
    channel_id: int
    user_id: int
    kind: JobKind
    prompt: str
    negative: str
    model: str
    sampler: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    count: int
    created_at: float
    strength: float | None = None
    parent_job: str | None = None
    parent_index: int | None = None
    mode: str = "txt2img"  # bot.engine.types.Mode: how the engine makes the pictures
    init_image: str | None = None  # sha256 of the picture to start from, or to edit
    mask_image: str | None = None  # sha256 of the mask of what to redraw (white)
    box: str | None = None  # where the picture sits on the result's canvas, `x,y,w,h`
    edit: str | None = None  # what an edit did: `zoom 2`, `pan left`, `square`, `region 1,5`
    draft: str | None = None  # a `--draft` job: the model it stands in for (Enhance renders on it)
    status: JobStatus = JobStatus.QUEUED
    error: str | None = None
    nsfw_allowed: bool = False
    application_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    attachment_limit: int | None = None
    message_id: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    delivered_at: float | None = None
    deleted_at: float | None = None
    delivery_attempts: int = 0  # times showing the finished job's result was tried
    delivery_error: str | None = None  # why Atelier stopped trying to show it
    control: str | None = None  # the ControlNet's control: canny, depth, pose…
    control_image: str | None = None  # sha256 of the picture the control map is made from
    control_map: str | None = None  # sha256 of the map the ControlNet read (once it ran)
    control_weight: float | None = None  # --cw
    reference_images: str | None = None  # sha256s of the reference pictures, comma-separated
    image_weight: float | None = None  # --iw
    style_weight: float | None = None  # --sw of a style reference (--sref); None: not one
    suggestions: str | None = None  # /describe's prompt suggestions, one a line

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.count)]

    @property
    def references(self) -> list[str]:
        """The sha256s of the reference pictures, in order."""
        return self.reference_images.split(",") if self.reference_images else []

    @property
    def suggestion_list(self) -> list[str]:
        return self.suggestions.split("\n") if self.suggestions else []

    @property
    def pictures(self) -> list[str]:
        """Every stored picture this job refers to (besides those it made)."""
        return [sha for sha in (self.init_image, self.mask_image, self.control_image,
                                self.control_map, *self.references) if sha is not None]

    def visible_to(self, scope: Scope) -> bool:
        """The rule the repository's queries apply, for a job already in hand."""
        if scope.guild_id is None:
            return self.guild_id is None and self.user_id == scope.user_id
        return self.guild_id == scope.guild_id and (
            self.channel_id in scope.channel_ids or self.user_id == scope.user_id)

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        values = dict(row)
        values["status"] = JobStatus(values["status"])
        values["kind"] = JobKind(values["kind"])
        values["nsfw_allowed"] = bool(values["nsfw_allowed"])
        return cls(**values)


JOB_COLUMNS = tuple(f.name for f in fields(JobRecord))


@dataclass(frozen=True)
class ImageRecord:
    job_id: str
    index: int
    seed: int
    path: str
    sha256: str
    width: int
    height: int
    size_bytes: int
    nsfw: bool = False


@dataclass(frozen=True)
class UserSettings:
    """A user's defaults for `/imagine`; None means "the model's default"."""

    user_id: int
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    negative: str | None = None
    model: str | None = None
    count: int | None = None
    sampler: str | None = None
    remix: bool = False
