"""Jobs from start to finish, in parts named for what they do: `policy` (may this job start?),
`making` (new jobs, and jobs made from others), `running` (accept, queue, store, cancel,
recover) and `showing` (what a job's message shows)."""

from bot.jobs.making import Origin
from bot.jobs.policy import JobPolicy, JobRefused, QueueFull
from bot.jobs.running import JobRunner

__all__ = ["JobPolicy", "JobRefused", "JobRunner", "Origin", "QueueFull"]
