"""Typed configuration, read once at start-up from the environment and an optional `.env` file."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

T = TypeVar("T")

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float16", "bfloat16", "float32")
OFFLOADS = ("none", "model", "sequential")
EXECUTORS = ("local", "ray")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_PUBLIC_URL = "http://localhost:8765"
DEFAULT_OAUTH_URL = "https://discord.com/oauth2/authorize"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    discord_token: str = field(repr=False)
    dev_guild_id: int | None = None
    sd_model: str = DEFAULT_MODEL
    sd_models: tuple[tuple[str, str], ...] = ()
    # A model's dedicated inpainting checkpoint, by model name (`default`: SD_MODEL's).
    sd_inpaint_models: tuple[tuple[str, str], ...] = ()
    sd_vae: tuple[tuple[str, str], ...] = ()  # (model name or `default`, VAE source)
    # (architecture, or None for SD_MODEL's; control; source)
    sd_controlnets: tuple[tuple[str | None, str, str], ...] = ()
    sd_ip_adapter: tuple[tuple[str, str], ...] = ()  # (architecture, source)
    sd_annotators: tuple[tuple[str, str], ...] = ()  # (control, source)
    sd_caption_model: str | None = None
    sd_device: str = "auto"
    sd_dtype: str = "auto"
    sd_dtypes: tuple[tuple[str, str], ...] = ()  # SD_DTYPE's `model=dtype` entries
    sd_offload: str = "none"
    sd_no_t5: tuple[str, ...] = ()  # SD 3.5 models (or `default`) run without their T5 encoder
    sd_draft_model: str | None = None  # what `--draft` runs; None: the job's model at 8 steps
    data_dir: Path = Path("data")
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    max_queue_per_user: int = 3
    max_batch: int = 8
    sd_models_loaded: int = 1
    sd_compile: bool = False
    lora_dir: Path | None = None
    executor: str = "local"
    ray_address: str = ""
    ray_workers: int | None = None
    engine_start_timeout: float = 600.0  # seconds jobs wait for an engine that cannot start
    log_level: str = "INFO"
    rate_limit_per_minute: int = 0  # 0 = no limit
    blocked_words: tuple[str, ...] = ()
    allowed_channels: tuple[int, ...] = ()
    vary_subtle_strength: float = 0.35
    vary_strong_strength: float = 0.7
    upscale_strength: float = 0.3
    enhance_strength: float = 0.5
    web_port: int = 8765  # 0 = no gallery
    web_host: str = "127.0.0.1"
    public_url: str = DEFAULT_PUBLIC_URL
    discord_client_secret: str | None = field(default=None, repr=False)
    web_secret: str | None = field(default=None, repr=False)
    discord_oauth_url: str = DEFAULT_OAUTH_URL
    # Not in the user-facing table: lets tests shorten discord.py's wait for guilds.
    guild_ready_timeout: float = 2.0
    # Nor this: how long fetching an uploaded picture from Discord may take (tests stall it).
    download_timeout: float = 10.0

    @property
    def database_path(self) -> Path:
        return self.data_dir / "atelier.db"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def thumbnails_dir(self) -> Path:
        return self.data_dir / "thumbs"


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _parse(env: Mapping[str, str], name: str, default: T, convert: Callable[[str], T],
           hint: str) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return convert(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {hint}, got {raw!r}") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):  # also false for nan
        raise ValueError(raw)
    return value


def _strength(raw: str) -> float:
    value = float(raw)
    if not 0.05 <= value <= 1.0:  # also false for nan
        raise ValueError(raw)
    return value


def _words(raw: str) -> tuple[str, ...]:
    return tuple(word.strip().lower() for word in raw.split(",") if word.strip())


def _ids(raw: str) -> tuple[int, ...]:
    ids = tuple(int(item) for item in raw.split(",") if item.strip())
    if any(value < 1 for value in ids):
        raise ValueError(raw)
    return ids


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if raw.lower() not in (o.lower() for o in options):
            raise ValueError(raw)
        return next(o for o in options if o.lower() == raw.lower())

    return convert


def _url(*schemes: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme.lower() not in schemes or not parts.netloc:
            raise ValueError(raw)
        return raw.rstrip("/")

    return convert


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(raw)
    return value


def _origin(raw: str) -> str:
    """An http(s) URL with no path: the gallery's links all start at the root of its host."""
    url = _url("http", "https")(raw)
    parts = urlsplit(url)
    if parts.path or parts.query or parts.fragment:
        raise ValueError(raw)
    return url


def _dtypes(raw: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`SD_DTYPE`: one dtype for every model and/or `model=dtype` entries: `float16,xl=float32`."""
    defaults: list[str] = []
    entries: dict[str, str] = {}
    for item in raw.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep:
            defaults.append(_choice(DTYPES)(name))
        elif not name or name.lower() in entries:
            raise ValueError(raw)
        else:
            entries[name.lower()] = _choice(DTYPES)(value)
    if len(defaults) > 1:
        raise ValueError(raw)
    return (defaults[0] if defaults else "auto"), tuple(entries.items())


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in raw.split(",") if name.strip())
    if not names:
        raise ValueError(raw)
    return names


def _model_name(raw: str) -> str:
    name = raw.strip().lower()
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(raw)
    return name


def _model_list(raw: str) -> tuple[tuple[str, str], ...]:
    models: list[tuple[str, str]] = []
    for item in raw.split(","):
        name, sep, source = item.strip().partition("=")
        name, source = name.strip(), source.strip()
        plain_name = name.replace("-", "").replace("_", "").isalnum()
        if not sep or not name or not source or not plain_name:
            raise ValueError(item)
        models.append((name.lower(), source))
    if len({name for name, _ in models}) != len(models):
        raise ValueError(raw)
    return tuple(models)


def _controlnets(raw: str) -> tuple[tuple[str | None, str, str], ...]:
    """`[family:]control=source,…`: the family prefix defaults to SD_MODEL's."""
    from bot.engine.adapters import ARCHITECTURES
    from bot.engine.types import CONTROLS

    found: list[tuple[str | None, str, str]] = []
    for item in raw.split(","):
        key, sep, source = item.strip().partition("=")
        family, colon, control = key.strip().lower().rpartition(":")
        family = family.strip() if colon else ""
        control, source = control.strip(), source.strip()
        if not sep or not source or control not in CONTROLS or \
                (family and family not in ARCHITECTURES):
            raise ValueError(item)
        found.append((family or None, control, source))
    if len({(family, control) for family, control, _ in found}) != len(found):
        raise ValueError(raw)
    return tuple(found)


def _per_family(raw: str) -> tuple[tuple[str, str], ...]:
    from bot.engine.adapters import ARCHITECTURES

    found = _model_list(raw)
    if any(family not in ARCHITECTURES for family, _ in found):
        raise ValueError(raw)
    return found


def _annotators(raw: str) -> tuple[tuple[str, str], ...]:
    from bot.engine.adapters import ANNOTATED

    found = _model_list(raw)
    if any(control not in ANNOTATED for control, _ in found):
        raise ValueError(raw)
    return found


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | Path = ".env",
    require_token: bool = True,
) -> Settings:
    """Read settings; variables in the environment win over those in `env_file`."""
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    env = {**from_file, **(os.environ if environ is None else environ)}

    token = env.get("DISCORD_TOKEN", "").strip()
    if not token and require_token:
        raise ConfigError("DISCORD_TOKEN is not set: put your bot token in .env or the environment")

    no_models: tuple[tuple[str, str], ...] = ()
    sd_models = _parse(env, "SD_MODELS", no_models, _model_list,
                       "a comma-separated list of name=source")
    sd_dtype, sd_dtypes = _parse(env, "SD_DTYPE", ("auto", no_models), _dtypes,
                                 "one of " + ", ".join(DTYPES) + ", and/or model=dtype entries "
                                 "(float16,flux=bfloat16)")

    return Settings(
        discord_token=token,
        dev_guild_id=_parse(env, "DEV_GUILD_ID", None, _positive_int, "a server id (a number)"),
        sd_model=_text(env, "SD_MODEL", DEFAULT_MODEL),
        sd_models=sd_models,
        sd_inpaint_models=_parse(env, "SD_INPAINT_MODELS", no_models, _model_list,
                                 "a comma-separated list of name=source"),
        sd_vae=_parse(env, "SD_VAE", no_models, _model_list,
                      "a comma-separated list of model=source (model: a name from SD_MODELS, "
                      "or default)"),
        sd_controlnets=_parse(env, "SD_CONTROLNETS", (), _controlnets,
                              "a comma-separated list of [family:]control=source (family: sd1, "
                              "sd2, sdxl, sd3, flux; control: canny, depth, pose, lineart, "
                              "scribble, tile, as-is), each family and control once"),
        sd_ip_adapter=_parse(env, "SD_IP_ADAPTER", no_models, _per_family,
                             "a comma-separated list of family=source (family: sd1, sd2, sdxl, "
                             "sd3, flux)"),
        sd_annotators=_parse(env, "SD_ANNOTATORS", no_models, _annotators,
                             "a comma-separated list of control=source (control: depth)"),
        sd_caption_model=_text(env, "SD_CAPTION_MODEL", "") or None,
        sd_device=_parse(env, "SD_DEVICE", "auto", _choice(DEVICES),
                         "one of " + ", ".join(DEVICES)),
        sd_dtype=sd_dtype,
        sd_dtypes=sd_dtypes,
        sd_offload=_parse(env, "SD_OFFLOAD", "none", _choice(OFFLOADS),
                          "one of " + ", ".join(OFFLOADS)),
        sd_no_t5=_parse(env, "SD_NO_T5", (), _names,
                        "comma-separated model names (default = SD_MODEL's)"),
        sd_draft_model=_parse(env, "SD_DRAFT_MODEL", None, _model_name,
                              "a model name from SD_MODELS, or default"),
        data_dir=Path(_text(env, "DATA_DIR", "data")).expanduser(),
        discord_api_base=_parse(env, "DISCORD_API_BASE", None, _url("http", "https"),
                                "an http(s) URL"),
        discord_gateway_url=_parse(env, "DISCORD_GATEWAY_URL", None, _url("ws", "wss"),
                                   "a ws(s) URL"),
        max_queue_per_user=_parse(env, "MAX_QUEUE_PER_USER", 3, _positive_int,
                                  "a whole number ≥ 1"),
        max_batch=_parse(env, "MAX_BATCH", 8, _positive_int, "a whole number ≥ 1"),
        sd_models_loaded=_parse(env, "SD_MODELS_LOADED", 1, _positive_int, "a whole number ≥ 1"),
        sd_compile=_parse(env, "SD_COMPILE", False, _flag, "0 or 1"),
        lora_dir=_parse(env, "LORA_DIR", None, lambda raw: Path(raw).expanduser(), "a folder"),
        executor=_parse(env, "EXECUTOR", "local", _choice(EXECUTORS), "local or ray"),
        ray_address=_text(env, "RAY_ADDRESS", ""),
        ray_workers=_parse(env, "RAY_WORKERS", None, _positive_int, "a whole number ≥ 1"),
        engine_start_timeout=_parse(env, "ENGINE_START_TIMEOUT", 600.0, _seconds,
                                    "a number of seconds ≥ 0"),
        log_level=_parse(env, "LOG_LEVEL", "INFO", lambda r: _choice(LOG_LEVELS)(r.upper()),
                         "one of " + ", ".join(LOG_LEVELS)),
        rate_limit_per_minute=_parse(env, "RATE_LIMIT_PER_MINUTE", 0, _count,
                                     "a whole number ≥ 0 (0 = no limit)"),
        blocked_words=_parse(env, "BLOCKED_WORDS", (), _words, "comma-separated words"),
        allowed_channels=_parse(env, "ALLOWED_CHANNELS", (), _ids,
                                "comma-separated channel ids"),
        vary_subtle_strength=_parse(env, "VARY_SUBTLE_STRENGTH", 0.35, _strength,
                                    "a number from 0.05 to 1.0"),
        vary_strong_strength=_parse(env, "VARY_STRONG_STRENGTH", 0.7, _strength,
                                    "a number from 0.05 to 1.0"),
        upscale_strength=_parse(env, "UPSCALE_STRENGTH", 0.3, _strength,
                                "a number from 0.05 to 1.0"),
        enhance_strength=_parse(env, "ENHANCE_STRENGTH", 0.5, _strength,
                                "a number from 0.05 to 1.0"),
        web_port=_parse(env, "WEB_PORT", 8765, _port, "a port number from 0 to 65535 (0 = off)"),
        web_host=_text(env, "WEB_HOST", "127.0.0.1"),
        public_url=_parse(env, "PUBLIC_URL", DEFAULT_PUBLIC_URL, _origin,
                          "an http(s) address without a path, like https://atelier.example.com"),
        discord_client_secret=env.get("DISCORD_CLIENT_SECRET", "").strip() or None,
        web_secret=env.get("WEB_SECRET", "").strip() or None,
        discord_oauth_url=_parse(env, "DISCORD_OAUTH_URL", DEFAULT_OAUTH_URL,
                                 _url("http", "https"), "an http(s) URL"),
        guild_ready_timeout=_parse(env, "ATELIER_GUILD_READY_TIMEOUT", 2.0, float, "seconds"),
    )
