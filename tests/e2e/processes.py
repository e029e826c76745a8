"""`python -m bot` run as a separate process, as an operator runs it: to the end (a start-up
that stops, `doctor`), or kept running while its log is read line by line."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

INVITE = ("https://discord.com/oauth2/authorize?client_id=1250000000000000001"
          "&scope=bot+applications.commands&permissions=117760")


async def run_atelier(*args: str, env: dict[str, str], cwd: Path,
                      timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS` to its end (off the event loop: the doubles answer meanwhile)."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot", *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines, result
    return lines[-1]


def table(stdout: str) -> dict[str, tuple[str, str]]:
    """Doctor's table: topic → (mark, text)."""
    from bot.doctor import TOPIC_WIDTH

    rows = {}
    for line in stdout.splitlines():
        mark, _, rest = line.partition(" ")
        if mark in ("✅", "⚠️", "❌"):
            rows[rest[:TOPIC_WIDTH].strip()] = (mark, rest[TOPIC_WIDTH + 1:])
    return rows


def free_port() -> int:
    """A port nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Running:
    """A `python -m bot` that keeps running; its output (log and all) collected as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path) -> Running:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=cwd, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                self.lines.append(raw.decode().rstrip("\n"))
                self._changed.set()
        finally:
            self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def line(self, wanted: str | Callable[[str], bool], timeout: float = 120) -> str:
        """The first line containing `wanted` (or satisfying it), waiting for it to come."""
        def matches(line: str) -> bool:
            return wanted in line if isinstance(wanted, str) else wanted(line)

        async def seen() -> str:
            while True:
                found = next((line for line in self.lines if matches(line)), None)
                if found is not None:
                    return found
                if self._reader.done():
                    raise AssertionError(f"the bot ended without {wanted!r}:\n{self.output}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise AssertionError(f"no line {wanted!r} in {timeout} s:\n{self.output}") from None

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait_for(self._reader, timeout)
        return code
