"""The team gallery (SPEC §8): the server's history in a browser, signed in with Discord, served
by the bot's own process on its event loop (`aiohttp.web`), reading the same repository and image
store as the cogs."""

from web.server import Gallery

__all__ = ["Gallery"]
