"""`python -m bot` starts Atelier; `python -m bot backup PATH` copies the database safely."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from bot.config import ConfigError, Settings, load_settings

log = logging.getLogger("bot")


class RedactToken(logging.Filter):
    """Never let the bot token reach a log line, whatever logged it."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "[token]"), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if self.token in text:
                record.exc_info = None
                record.exc_text = text.replace(self.token, "[token]")
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactToken(settings.discord_token))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # discord.py and aiosqlite at DEBUG log whole payloads, interaction tokens included.
    for name in ("discord", "aiosqlite", "PIL"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(
            settings.log_level)))


async def run(settings: Settings) -> None:
    from bot.client import AtelierBot

    bot = AtelierBot(settings)
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        log.info("%s: stopping; the running batch finishes, queued jobs wait for the next start",
                 signum.name)
        asyncio.ensure_future(bot.close())

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    async with bot:
        await bot.start(settings.discord_token)


def backup(settings: Settings, target: Path) -> int:
    """Copy the live database and the images beside `target` (see `bot.backup`)."""
    from bot.backup import BackupError
    from bot.backup import backup as make_backup

    try:
        made = make_backup(settings.database_path, settings.images_dir, target)
    except BackupError as error:
        print(f"atelier: backup: {error}", file=sys.stderr)
        return 2
    print(made.report(settings.database_path, settings.images_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["backup"]:
            if len(argv) != 2:
                print("usage: python -m bot backup PATH", file=sys.stderr)
                return 2
            return backup(load_settings(require_token=False), Path(argv[1]))
        if argv:
            print("usage: python -m bot [backup PATH]", file=sys.stderr)
            return 2
        settings = load_settings()
    except ConfigError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        asyncio.run(run(settings))
    except ConfigError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
