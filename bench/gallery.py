"""How fast the team gallery answers on a large server: the real bot, its web app and a signed-in
browser session against the loopback Discord double, over a database of 100,000 jobs.

Fills the database as `bench/history.py` does (one busy server of several, four pictures a job),
moves the busy server's jobs into the double's server, signs in through the double's OAuth2
pages, then times whole HTTP requests — routing, session, membership, the query, the names of the
authors, the template — as a browser makes them.

    python bench/gallery.py               # 100,000 jobs, 50 runs of each page
    python bench/gallery.py --jobs 5000   # smaller, quicker
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.history import GUILDS, fill, percentile  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.engine.worker import import_libraries  # noqa: E402
from storage import Repository, open_database  # noqa: E402
from tests.double import DiscordDouble  # noqa: E402
from tests.e2e.conftest import running_atelier  # noqa: E402
from tests.web.conftest import Visitor  # noqa: E402

TARGET_MS = 50.0  # p50 of a page of 48, search included


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def prepare(path: Path, jobs: int, seed: int, double: DiscordDouble) -> tuple[str, int]:
    """The filled database, the busy server's jobs now the double's server's (its #general);
    an old job's id and the number of jobs the server has."""
    repo = Repository(await open_database(path))
    try:
        started = time.perf_counter()
        await fill(repo, jobs, seed)
        async with repo.transaction():
            await repo.db.execute("UPDATE jobs SET guild_id = ?, channel_id = ? WHERE guild_id = ?",
                                  (double.guild.id, double.channel.id, GUILDS[0]))
            # Delivered long ago: the bot must not try to post them again at its start.
            await repo.db.execute("UPDATE jobs SET delivered_at = finished_at")
        async with repo.db.execute(
            "SELECT id FROM jobs WHERE guild_id = ? AND status = 'done' ORDER BY created_at"
            " LIMIT 1", (double.guild.id,)
        ) as cursor:
            row = await cursor.fetchone()
        async with repo.db.execute("SELECT count(*) FROM jobs WHERE guild_id = ?",
                                   (double.guild.id,)) as cursor:
            count = await cursor.fetchone()
        print(f"filled {jobs:,} jobs in {time.perf_counter() - started:.1f} s "
              f"({path.stat().st_size / 2**20:.0f} MiB)")
        return (str(row[0]) if row else "k3f9x2ab"), int(count[0]) if count else 0
    finally:
        await repo.close()


async def timed(visitor: Visitor, path: str, runs: int) -> tuple[list[float], int, int]:
    """Milliseconds of each of `runs` requests (after one warm-up), the status and the number of
    jobs on the page."""
    page = await visitor.get(path)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        page = await visitor.get(path)
        times.append((time.perf_counter() - started) * 1000)
    return times, page.status, len(page.job_ids())


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    import_libraries()  # the bot would, in its start-up; here before the clock of a start runs
    double = DiscordDouble()
    await double.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            old_job, server_jobs = await prepare(data / "atelier.db", args.jobs, args.seed, double)
            port = free_port()
            settings = Settings(
                discord_token=double.token, sd_model="tiny", data_dir=data,
                discord_api_base=double.api_base, discord_gateway_url=double.gateway_url,
                guild_ready_timeout=0.05, web_port=port, public_url=f"http://127.0.0.1:{port}",
                discord_client_secret=double.client_secret, discord_oauth_url=double.oauth_url)
            async with running_atelier(double, settings) as atelier:
                visitor = Visitor(atelier)
                try:
                    await visitor.sign_in(double.alice)
                    await measure(visitor, double, old_job, server_jobs, args.runs)
                finally:
                    await visitor.close()
    finally:
        await double.close()


async def measure(visitor: Visitor, double: DiscordDouble, old_job: str, server_jobs: int,
                  runs: int) -> None:
    where = f"/g/{double.guild.id}"
    busy_user = GUILDS[0] * 1000  # the first of the busy server's members in the data
    pages: Sequence[tuple[str, str]] = (
        ("grid, page 1", where),
        ("grid, page 50", f"{where}?page=50"),
        ("search 'fox'", f"{where}?q=fox"),
        ("search '\"red fox\"'", f"{where}?q=%22red+fox%22"),
        ("search 'lig' (prefix)", f"{where}?q=lig"),
        ("search 'misty owl watercolor'", f"{where}?q=misty+owl+watercolor"),
        ("search 'fox', page 10", f"{where}?q=fox&page=10"),
        ("one member", f"{where}?user={busy_user}"),
        ("one member, search 'fox'", f"{where}?user={busy_user}&q=fox"),
        ("model and kind", f"{where}?model=sd15&kind=reroll"),
        ("favourites (none)", f"{where}?favourites=1"),
        ("a job's page", f"/jobs/{old_job}"),
        ("the servers page", "/"),
    )
    print(f"\n{runs} runs each, server {double.guild.id} ({server_jobs:,} jobs), "
          "whole HTTP requests of a signed-in browser")
    print(f"{'page':<34} {'p50 ms':>8} {'p95 ms':>8} {'status':>7} {'jobs':>5}")
    worst = 0.0
    for name, path in pages:
        times, status, shown = await timed(visitor, path, runs)
        median = statistics.median(times)
        if path.startswith(where):
            worst = max(worst, median)
        print(f"{name:<34} {median:>8.1f} {percentile(times, 0.95):>8.1f} {status:>7} "
              f"{shown:>5}")
    verdict = "within" if worst < TARGET_MS else "over"
    print(f"\nslowest p50 of a gallery page: {worst:.1f} ms ({verdict} the {TARGET_MS:.0f} ms "
          "target)")


def arguments(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to create (100000)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per page (50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the data (1)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(arguments()))
