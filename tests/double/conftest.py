from tests.double.fixtures import discord_double  # noqa: F401
