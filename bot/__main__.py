"""`python -m bot` starts Atelier; `python -m bot doctor` checks what it needs and says what to
fix; `python -m bot backup PATH` copies the database safely. A start-up that cannot go on ends
with one line saying what to do (the traceback, if any, is logged at DEBUG)."""

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


class OneLineReconnects(logging.Filter):
    """discord.py logs each gateway reconnect with the whole traceback of why it was cut off;
    one line says it (the traceback stays at DEBUG)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name == "discord.client" and record.msg == "Attempting a reconnect in %.2fs"
                and record.exc_info and record.exc_info[1] is not None):
            from bot.startup import reason

            delay = record.args[0] if isinstance(record.args, tuple) and record.args else 0
            record.msg = "lost the connection to Discord (%s); reconnecting in %.0f s"
            record.args = (reason(record.exc_info[1]), delay)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if not self.verbose:
                record.exc_info, record.exc_text = None, None
        return True


def configure_logging(settings: Settings, level: str | None = None) -> None:
    level = level or settings.log_level
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(OneLineReconnects(verbose=level == "DEBUG"))
    handler.addFilter(RedactToken(settings.discord_token))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # discord.py and aiosqlite at DEBUG log whole payloads, interaction tokens included.
    for name in ("discord", "aiosqlite", "PIL"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))


async def run(settings: Settings) -> None:
    from bot import startup
    from bot.client import AtelierBot

    # 1. What this machine gives: the data folder, the device, the models
    await asyncio.to_thread(startup.check_here, settings)
    # 2. Discord: log in (setup_hook runs then), connect; both wait while it is unreachable
    bot = AtelierBot(settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    closing: list[asyncio.Future[None]] = []

    def stop(signum: signal.Signals) -> None:
        log.info("%s: stopping; the running batch finishes, queued jobs wait for the next start",
                 signum.name)
        stopping.set()
        if not closing:
            closing.append(asyncio.ensure_future(bot.close()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    async with bot:
        if await startup.log_in(bot, settings.discord_token, stopping):
            await startup.connect(bot, stopping)
        # A stop while waiting for Discord returns here at once: let the close it began end
        # before leaving, which would otherwise close the bot a second time alongside it.
        await asyncio.gather(*closing)


def doctor() -> int:
    """Check everything Atelier needs and print a table; 1 when a line is ❌."""
    from bot.doctor import configuration_problem, examine

    try:
        settings = load_settings(require_token=False)
    except ConfigError as error:
        return configuration_problem(error)
    configure_logging(settings, level="WARNING")  # the table says it all; warnings still show
    return asyncio.run(examine(settings))


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
        if argv == ["doctor"]:
            return doctor()
        if argv:
            print("usage: python -m bot [doctor | backup PATH]", file=sys.stderr)
            return 2
        settings = load_settings()
    except ConfigError as error:
        print(f"atelier: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        asyncio.run(run(settings))
    except ConfigError as error:
        log.debug("start-up stopped", exc_info=True)
        print(f"atelier: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
