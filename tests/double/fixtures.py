"""Pytest fixtures for the Discord double; import them from a conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .server import DiscordDouble


@pytest_asyncio.fixture
async def discord_double() -> AsyncIterator[DiscordDouble]:
    """A started :class:`DiscordDouble` on 127.0.0.1, closed after the test."""
    double = DiscordDouble()
    await double.start()
    try:
        yield double
    finally:
        await double.close()
