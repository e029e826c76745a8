"""What Atelier needs in a server: the permissions it uses in a channel, the invite link that
grants them with the right scopes, and which channels of a server lack them (start-up warns,
`python -m bot doctor` reports)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import discord

# Posting a result is a message with a picture (Attach Files) and, for some answers, an embed;
# threads and history need the channel to be readable.
NEEDED = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)
SCOPES = ("bot", "applications.commands")
LISTED_CHANNELS = 3  # channels named in one line before "and N more"


def invite_url(application_id: int) -> str:
    """The link that adds this application to a server with its commands and `NEEDED`."""
    return discord.utils.oauth_url(application_id, permissions=NEEDED, scopes=SCOPES)


# discord.py's names that Discord's settings show otherwise.
_LABELS = {"read_messages": "View Channel"}


def labels(permissions: discord.Permissions) -> list[str]:
    """`Attach Files`, `View Channel`…: the names Discord's channel settings show."""
    return [_LABELS.get(name, name.replace("_", " ").title())
            for name, value in permissions if value]


@dataclass(frozen=True)
class ChannelGap:
    """A channel the bot can view but cannot post results in, and what it lacks there."""

    name: str
    missing: tuple[str, ...]


@dataclass(frozen=True)
class ServerReport:
    """Where in one server the bot can post results, as its roles and overwrites allow."""

    usable: int  # text channels with every needed permission
    gaps: tuple[ChannelGap, ...]  # channels lacking some (unviewable ones only if allowed)
    allowed: bool  # only ALLOWED_CHANNELS were checked

    @property
    def broken(self) -> bool:
        """The bot cannot serve this server as configured: nowhere to post results, or a
        channel of ALLOWED_CHANNELS it cannot post in."""
        return self.usable == 0 or (self.allowed and bool(self.gaps))

    @property
    def fine(self) -> bool:
        return not self.gaps and self.usable > 0

    def describe(self) -> str:
        """One line: where the bot is fine, or what to grant where."""
        which = "allowed channel" if self.allowed else "channel"
        if self.fine:
            return f"permissions ok in {_count(self.usable, which)}"
        if not self.gaps:
            return f"the bot can view no text channel here: grant it {', '.join(labels(NEEDED))}"
        listed = [f"#{gap.name} lacks {', '.join(gap.missing)}"
                  for gap in self.gaps[:LISTED_CHANNELS]]
        if len(self.gaps) > LISTED_CHANNELS:
            listed.append(f"and {_count(len(self.gaps) - LISTED_CHANNELS, 'more ' + which)}")
        ok = (f"ok in {_count(self.usable, 'other ' + which)}" if self.usable
              else f"no {which} where it can post results yet")
        return (f"{'; '.join(listed)}: grant these to the bot's role in each channel's settings "
                f"({ok})")


def server_report(me: discord.Member, channels: Iterable[discord.abc.GuildChannel],
                  allowed: Iterable[int] = ()) -> ServerReport:
    """Check the text channels of one server for `me`, the bot's member there. Where
    `allowed` (ALLOWED_CHANNELS) names some of them, only those count."""
    texts = [channel for channel in channels if isinstance(channel, discord.TextChannel)]
    allowed_here = set(allowed) & {channel.id for channel in texts}
    if allowed_here:
        texts = [channel for channel in texts if channel.id in allowed_here]
    usable = 0
    gaps: list[ChannelGap] = []
    for channel in sorted(texts, key=lambda c: c.position):
        have = channel.permissions_for(me)
        if not have.view_channel and not allowed_here:
            continue  # a private channel the bot was not let into is nobody's concern
        missing = discord.Permissions(NEEDED.value & ~have.value)
        if missing.value:
            gaps.append(ChannelGap(channel.name, tuple(labels(missing))))
        else:
            usable += 1
    return ServerReport(usable, tuple(gaps), bool(allowed_here))


def _count(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"
