"""Persistence: the SQLite repository (jobs, images, settings, favourites) and the image files."""

from storage.database import open_database
from storage.files import ImageStore
from storage.records import (
    JOB_KINDS,
    ImageRecord,
    JobKind,
    JobRecord,
    JobStatus,
    Scope,
    UserSettings,
    new_job_id,
)
from storage.repository import Repository

__all__ = [
    "JOB_KINDS",
    "ImageRecord",
    "ImageStore",
    "JobKind",
    "JobRecord",
    "JobStatus",
    "Repository",
    "Scope",
    "UserSettings",
    "new_job_id",
    "open_database",
]
