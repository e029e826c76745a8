"""How fast `/history`, its search and `/recall`'s autocomplete answer on a large database.

Builds a real SQLite file with the project's migrations, fills it with jobs (several servers,
channels and users, varied prompts, four image rows each), then times the repository methods the
cogs call, for a member who cannot view two of the busiest server's twelve channels.

    python bench/history.py               # 100,000 jobs, 50 runs of each query
    python bench/history.py --jobs 5000   # smaller, quicker
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import Repository, Scope, open_database  # noqa: E402
from storage.records import new_job_id  # noqa: E402

ADJECTIVES = (
    "red", "blue", "golden", "misty", "ancient", "tiny", "giant", "neon", "quiet", "stormy",
    "frozen", "sunlit", "crumbling", "floating", "glass", "wooden", "velvet", "rusty", "silver",
    "emerald", "forgotten", "cosy", "haunted", "bright", "dark", "lonely", "busy", "wild",
)
SUBJECTS = (
    "fox", "lighthouse", "cat", "dragon", "castle", "robot", "whale", "forest", "city", "owl",
    "mountain", "teapot", "astronaut", "garden", "train", "library", "samurai", "octopus",
    "village", "cathedral", "bicycle", "tiger", "harbour", "desert", "waterfall", "bridge",
    "market", "wizard", "knight", "balloon", "submarine", "greenhouse", "panda", "fox cub",
)
PLACES = (
    "in the snow", "at dusk", "under the sea", "on the moon", "in a rainy street", "at dawn",
    "in a misty valley", "on a cliff", "in the desert", "in a neon alley", "by the lake",
    "in an autumn forest", "among the clouds", "in a field of flowers", "on a rooftop",
    "inside a snow globe", "at the end of the world", "in a busy market", "after the storm",
)
STYLES = (
    "oil painting", "watercolor", "studio ghibli style", "cinematic lighting", "35mm photo",
    "isometric", "pixel art", "ukiyo-e", "octane render", "pencil sketch", "art nouveau",
    "low poly", "volumetric fog", "golden hour", "highly detailed", "matte painting",
    "by greg rutkowski", "trending on artstation", "8k", "bokeh", "film grain", "vaporwave",
)

GUILDS = (1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008)
GUILD_WEIGHTS = (40, 20, 12, 8, 6, 5, 4, 3)  # one busy server, a long tail; the rest are DMs
DM_SHARE = 0.02
USERS_PER_GUILD = 40
CHANNELS_PER_GUILD = 12  # the last PRIVATE_CHANNELS of them are hidden from the viewer
PRIVATE_CHANNELS = 2
BATCH = 10_000
HISTORY_PAGE = 9


def prompt(rng: random.Random) -> str:
    """A Midjourney-ish prompt: adjective, subject, place, then a few style words."""
    words = [rng.choice(ADJECTIVES), rng.choice(SUBJECTS)]
    if rng.random() < 0.8:
        words.append(rng.choice(PLACES))
    text = f"a {' '.join(words)}"
    styles = rng.sample(STYLES, rng.randint(0, 4))
    if styles:
        text += ", " + ", ".join(styles)
    if rng.random() < 0.1:
        text += f" --ar {rng.choice(('16:9', '3:2', '2:3'))}"
    return text


JOB_FIELDS = ("id", "guild_id", "channel_id", "user_id", "kind", "prompt", "negative", "model",
              "sampler", "width", "height", "steps", "guidance", "seed", "count", "created_at",
              "status", "started_at", "finished_at", "message_id", "deleted_at")


def channel_of(guild: int | None, rng: random.Random) -> int:
    """One of the server's channels (numbered `guild * 100 + k`), or the DM channel."""
    return (guild or 0) * 100 + (rng.randrange(CHANNELS_PER_GUILD) if guild else 1)


def visible_channels(guild: int) -> frozenset[int]:
    """The channels of `guild` the benchmark's viewer can see: all but the private ones."""
    return frozenset(guild * 100 + k for k in range(CHANNELS_PER_GUILD - PRIVATE_CHANNELS))


def job_rows(count: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """`count` jobs (JOB_FIELDS), oldest first, about a minute apart over ~70 days."""
    start = time.time() - count * 60
    for n in range(count):
        dm = rng.random() < DM_SHARE
        guild = None if dm else rng.choices(GUILDS, GUILD_WEIGHTS)[0]
        user = rng.randrange(USERS_PER_GUILD) + (guild or 9000) * 1000
        status = rng.choices(("done", "failed", "cancelled"), (95, 3, 2))[0]
        created = start + n * 60 + rng.random()
        values = {
            "id": new_job_id(), "guild_id": guild, "channel_id": channel_of(guild, rng),
            "user_id": user, "kind": rng.choices(("imagine", "reroll", "variation", "upscale"),
                                                 (70, 10, 15, 5))[0],
            "prompt": prompt(rng), "negative": "", "model": "sd15", "sampler": "euler_a",
            "width": 512, "height": 512, "steps": 30, "guidance": 7.0, "seed": rng.randrange(2**32),
            "count": 4, "created_at": created, "status": status, "started_at": created + 1,
            "finished_at": created + 5, "message_id": rng.randrange(10**17, 10**18),
            "deleted_at": created + 9 if rng.random() < 0.01 else None,
        }
        yield tuple(values[name] for name in JOB_FIELDS)


async def fill(repo: Repository, count: int, seed: int) -> None:
    """Insert `count` jobs with four images each (and some favourites) in big transactions."""
    rng = random.Random(seed)
    db = repo.db
    job_sql = (f"INSERT INTO jobs ({', '.join(JOB_FIELDS)})"
               f" VALUES ({', '.join('?' for _ in JOB_FIELDS)})")
    image_sql = ("INSERT INTO images (job_id, idx, seed, path, sha256, width, height, size_bytes)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    favourite_sql = "INSERT INTO favourites (user_id, job_id, idx, created_at) VALUES (?, ?, ?, ?)"
    rows = job_rows(count, rng)
    id_at, seed_at, status_at, user_at, created_at = (
        JOB_FIELDS.index(name) for name in ("id", "seed", "status", "user_id", "created_at"))
    inserted = 0
    while inserted < count:
        jobs = [row for _, row in zip(range(BATCH), rows, strict=False)]
        images, favourites = [], []
        for job in jobs:
            if job[status_at] != "done":
                continue
            for idx in range(4):
                sha = f"{rng.getrandbits(256):064x}"
                images.append((job[id_at], idx, job[seed_at] + idx, f"{sha[:2]}/{sha}.png", sha,
                               512, 512, 400_000))
            if rng.random() < 0.05:
                favourites.append((job[user_at], job[id_at], rng.randrange(4), job[created_at]))
        async with repo.transaction():
            await db.executemany(job_sql, jobs)
            await db.executemany(image_sql, images)
            await db.executemany(favourite_sql, favourites)
        inserted += len(jobs)


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[list[float], Any]:
    """Milliseconds of each of `runs` calls (after one warm-up), and the last result."""
    result = await call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


async def scalar(repo: Repository, sql: str, *params: Any) -> Any:
    async with repo.db.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return row[0] if row else None


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "atelier.db"
        if path.exists():
            sys.exit(f"{path} exists; give a new file")
        repo = Repository(await open_database(path))
        try:
            started = time.perf_counter()
            await fill(repo, args.jobs, args.seed)
            filled = time.perf_counter() - started
            jobs = await scalar(repo, "SELECT count(*) FROM jobs")
            images = await scalar(repo, "SELECT count(*) FROM images")
            favourites = await scalar(repo, "SELECT count(*) FROM favourites")
            print(f"database: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
            print(f"filled {jobs:,} jobs, {images:,} images, {favourites:,} favourites "
                  f"in {filled:.1f} s")
            await run_queries(repo, args.runs)
        finally:
            await repo.close()


async def run_queries(repo: Repository, runs: int) -> None:
    guild = GUILDS[0]
    # The people and the job the queries are about; 0 (nobody) where the data has none.
    busy_user = await scalar(
        repo, "SELECT user_id FROM jobs WHERE guild_id = ? GROUP BY user_id"
        " ORDER BY count(*) DESC LIMIT 1", guild) or 0
    fan = await scalar(repo, "SELECT f.user_id FROM favourites f JOIN jobs j ON j.id = f.job_id"
                             " WHERE j.guild_id = ? GROUP BY f.user_id ORDER BY count(*) DESC"
                             " LIMIT 1", guild) or 0
    some_id = await scalar(repo, "SELECT id FROM jobs WHERE guild_id = ? AND status = 'done'"
                                 " AND channel_id = ? ORDER BY created_at LIMIT 1",
                           guild, guild * 100) or "k3f9x2ab"
    dm_user = await scalar(repo, "SELECT user_id FROM jobs WHERE guild_id IS NULL LIMIT 1") or 0
    scope = Scope(guild, busy_user, visible_channels(guild))  # a busy member, two channels hidden
    deep = 200
    history: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("history page 1", lambda: repo.history(scope)),
        (f"history page {deep}", lambda: repo.history(scope, offset=(deep - 1) * HISTORY_PAGE)),
        ("history user=busiest", lambda: repo.history(scope, user_id=busy_user)),
        ("history favourites", lambda: repo.history(scope, favourites_of=fan)),
        ("history in a DM", lambda: repo.history(Scope(None, dm_user))),
        ("history search 'fox'", lambda: repo.history(scope, search="fox")),
        ("history search '\"red fox\"'", lambda: repo.history(scope, search='"red fox"')),
        ("history search 'lig' (prefix)", lambda: repo.history(scope, search="lig")),
        ("history search 'misty owl watercolor'",
         lambda: repo.history(scope, search="misty owl watercolor")),
        ("history search 'fox' page 20",
         lambda: repo.history(scope, search="fox", offset=19 * HISTORY_PAGE)),
    ]
    autocomplete: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("autocomplete ''", lambda: repo.search_prompts(scope, "")),
        ("autocomplete 'a'", lambda: repo.search_prompts(scope, "a")),
        ("autocomplete 're'", lambda: repo.search_prompts(scope, "re")),
        ("autocomplete 'red fo'", lambda: repo.search_prompts(scope, "red fo")),
        ("autocomplete 'golden hour'", lambda: repo.search_prompts(scope, "golden hour")),
        ("autocomplete job id prefix", lambda: repo.search_prompts(scope, some_id[:4])),
    ]
    print(f"\n{runs} runs each, server {guild} "
          f"({await scalar(repo, 'SELECT count(*) FROM jobs WHERE guild_id = ?', guild):,} jobs)")
    print(f"{'query':<40} {'median ms':>10} {'p95 ms':>9} {'rows':>6} {'matches':>9}")
    worst = 0.0
    for name, call in history + autocomplete:
        times, result = await timed(call, runs)
        if isinstance(result, tuple):
            found, total = result
        else:
            found, total = result, len(result)
        median = statistics.median(times)
        worst = max(worst, median)
        print(f"{name:<40} {median:>10.2f} {percentile(times, 0.95):>9.2f} "
              f"{len(found):>6} {total:>9,}")
    print(f"\nslowest median: {worst:.2f} ms")


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to create (100000)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per query (50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data (1)")
    parser.add_argument("--db", help="write the database here and keep it (default: a temp file)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(arguments()))
