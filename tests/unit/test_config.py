"""`load_settings`: every variable of SPEC §2, `.env` versus environment, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DEFAULT_MODEL, ConfigError, Settings, load_settings

TOKEN = "MTIzNDU2Nzg5.secret-token-do-not-print"


def _env_file(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, environ: dict[str, str], dotenv: str = "") -> Settings:
    return load_settings(environ, _env_file(tmp_path, dotenv))


def test_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path, {"DISCORD_TOKEN": TOKEN})
    assert settings == Settings(discord_token=TOKEN)
    assert settings.dev_guild_id is None
    assert settings.sd_model == DEFAULT_MODEL == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert settings.sd_models == ()
    assert (settings.sd_device, settings.sd_dtype) == ("auto", "auto")
    assert settings.data_dir == Path("data")
    assert settings.database_path == Path("data/atelier.db")
    assert settings.images_dir == Path("data/images")
    assert settings.discord_api_base is None and settings.discord_gateway_url is None
    assert (settings.max_queue_per_user, settings.max_batch, settings.sd_models_loaded) == (3, 8, 1)
    assert settings.sd_compile is False
    assert settings.lora_dir is None
    assert (settings.executor, settings.ray_address, settings.ray_workers) == ("local", "", None)
    assert settings.engine_start_timeout == 600.0
    assert settings.log_level == "INFO"
    assert settings.rate_limit_per_minute == 0  # off: the queue limit already bounds a user
    assert (settings.web_port, settings.web_host) == (8765, "127.0.0.1")
    assert settings.public_url == "http://localhost:8765"
    assert settings.discord_client_secret is None and settings.web_secret is None
    assert settings.discord_oauth_url == "https://discord.com/oauth2/authorize"


def test_every_variable_parsed_and_typed(tmp_path: Path) -> None:
    settings = _load(tmp_path, {
        "DISCORD_TOKEN": f"  {TOKEN}  ",
        "DEV_GUILD_ID": "123456789012345678",
        "SD_MODEL": "tiny",
        "SD_MODELS": " Anime=/models/waifu.safetensors , xl=stabilityai/sdxl-base ",
        "SD_VAE": "xl=madebyollin/sdxl-vae-fp16-fix",
        "SD_DEVICE": "CPU",
        "SD_DTYPE": "bfloat16",
        "DATA_DIR": str(tmp_path / "store"),
        "DISCORD_API_BASE": "http://127.0.0.1:8080/api/v10/",
        "DISCORD_GATEWAY_URL": "wss://gateway.example",
        "MAX_QUEUE_PER_USER": "5",
        "MAX_BATCH": "16",
        "SD_MODELS_LOADED": "2",
        "SD_COMPILE": "1",
        "LORA_DIR": str(tmp_path / "loras"),
        "EXECUTOR": "ray",
        "RAY_ADDRESS": "ray://head:10001",
        "RAY_WORKERS": "4",
        "ENGINE_START_TIMEOUT": "90.5",
        "LOG_LEVEL": "debug",
    })
    assert settings.discord_token == TOKEN
    assert settings.dev_guild_id == 123456789012345678
    assert settings.sd_model == "tiny"
    assert settings.sd_models == (("anime", "/models/waifu.safetensors"),
                                  ("xl", "stabilityai/sdxl-base"))
    assert settings.sd_vae == (("xl", "madebyollin/sdxl-vae-fp16-fix"),)
    assert settings.sd_device == "cpu"
    assert settings.sd_dtype == "bfloat16"
    assert settings.data_dir == tmp_path / "store"
    assert settings.database_path == tmp_path / "store" / "atelier.db"
    assert settings.discord_api_base == "http://127.0.0.1:8080/api/v10"
    assert settings.discord_gateway_url == "wss://gateway.example"
    assert settings.max_queue_per_user == 5
    assert settings.max_batch == 16
    assert settings.sd_models_loaded == 2
    assert settings.sd_compile is True
    assert settings.lora_dir == tmp_path / "loras"
    assert settings.executor == "ray"
    assert settings.ray_address == "ray://head:10001"
    assert settings.ray_workers == 4
    assert settings.engine_start_timeout == 90.5
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(("raw", "value"), [("0", False), ("false", False), ("off", False),
                                            ("1", True), ("TRUE", True), ("yes", True)])
def test_compile_flag(tmp_path: Path, raw: str, value: bool) -> None:
    assert _load(tmp_path, {"DISCORD_TOKEN": TOKEN, "SD_COMPILE": raw}).sd_compile is value


def test_values_come_from_the_env_file(tmp_path: Path) -> None:
    dotenv = (f"DISCORD_TOKEN={TOKEN}\n# a comment\nSD_MODEL=tiny\nMAX_BATCH=2\n"
              "SD_MODELS=a=/x/a.safetensors\nDATA_DIR=/srv/atelier\n")
    settings = _load(tmp_path, {}, dotenv)
    assert settings.discord_token == TOKEN
    assert (settings.sd_model, settings.max_batch) == ("tiny", 2)
    assert settings.sd_models == (("a", "/x/a.safetensors"),)
    assert settings.data_dir == Path("/srv/atelier")


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    dotenv = "DISCORD_TOKEN=from-file\nSD_MODEL=tiny\nMAX_BATCH=2\nLOG_LEVEL=ERROR\n"
    settings = _load(tmp_path, {"DISCORD_TOKEN": TOKEN, "MAX_BATCH": "6"}, dotenv)
    assert settings.discord_token == TOKEN
    assert settings.max_batch == 6
    assert settings.sd_model == "tiny"  # not in the environment: the file's value
    assert settings.log_level == "ERROR"


def test_missing_env_file_is_fine(tmp_path: Path) -> None:
    settings = load_settings({"DISCORD_TOKEN": TOKEN}, tmp_path / "absent.env")
    assert settings.discord_token == TOKEN


@pytest.mark.parametrize("environ", [{}, {"DISCORD_TOKEN": ""}, {"DISCORD_TOKEN": "   "}])
def test_missing_token(tmp_path: Path, environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        _load(tmp_path, environ, "SD_MODEL=tiny\n")


def test_token_not_required_when_not_asked(tmp_path: Path) -> None:
    settings = load_settings({}, _env_file(tmp_path), require_token=False)
    assert settings.discord_token == ""


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAX_BATCH", "abc"),
        ("MAX_BATCH", "0"),
        ("MAX_BATCH", "2.5"),
        ("MAX_QUEUE_PER_USER", "-1"),
        ("SD_MODELS_LOADED", "many"),
        ("RAY_WORKERS", "0"),
        ("ENGINE_START_TIMEOUT", "-1"),
        ("ENGINE_START_TIMEOUT", "ten minutes"),
        ("ENGINE_START_TIMEOUT", "inf"),
        ("DEV_GUILD_ID", "my-server"),
        ("SD_DEVICE", "gpu"),
        ("SD_DTYPE", "float8"),
        ("SD_MODELS", "anime"),
        ("SD_MODELS", "anime=/a.safetensors,xl"),
        ("SD_MODELS", "=/a.safetensors"),
        ("SD_MODELS", "a=/a.safetensors,A=/b.safetensors"),
        ("SD_MODELS", "bad name=/a.safetensors"),
        ("SD_VAE", "madebyollin/sdxl-vae-fp16-fix"),
        ("SD_VAE", "xl=a,XL=b"),
        ("SD_CONTROLNETS", "edges=lllyasviel/sd-controlnet-canny"),
        ("SD_CONTROLNETS", "sd9:canny=a"),
        ("SD_CONTROLNETS", "canny"),
        ("SD_CONTROLNETS", "canny=a,canny=b"),
        ("SD_IP_ADAPTER", "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"),
        ("SD_IP_ADAPTER", "sd15=h94/IP-Adapter/models/ip-adapter_sd15.safetensors"),
        ("SD_ANNOTATORS", "lineart=lllyasviel/Annotators"),
        ("DISCORD_API_BASE", "ftp://x"),
        ("DISCORD_API_BASE", "localhost:8080"),
        ("DISCORD_API_BASE", "ws://127.0.0.1:8080"),
        ("DISCORD_API_BASE", "http://"),
        ("DISCORD_GATEWAY_URL", "ftp://x"),
        ("DISCORD_GATEWAY_URL", "https://gateway.example"),
        ("SD_COMPILE", "maybe"),
        ("SD_COMPILE", "2"),
        ("EXECUTOR", "celery"),
        ("LOG_LEVEL", "LOUD"),
        ("WEB_PORT", "http"),
        ("WEB_PORT", "-1"),
        ("WEB_PORT", "65536"),
        ("PUBLIC_URL", "atelier.example.com"),
        ("PUBLIC_URL", "https://example.com/atelier"),
        ("PUBLIC_URL", "https://example.com?x=1"),
        ("DISCORD_OAUTH_URL", "discord.com/oauth2/authorize"),
    ],
)
def test_malformed_values_name_the_variable(tmp_path: Path, name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"DISCORD_TOKEN": TOKEN, name: raw})
    message = str(caught.value)
    assert name in message
    assert "\n" not in message  # one clear line
    assert TOKEN not in message
    # the same mistake in .env reads the same
    with pytest.raises(ConfigError, match=name):
        _load(tmp_path, {}, f"DISCORD_TOKEN={TOKEN}\n{name}={raw}\n")


def test_token_never_shown(tmp_path: Path) -> None:
    settings = _load(tmp_path, {"DISCORD_TOKEN": TOKEN, "SD_MODEL": "tiny"})
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert "tiny" in repr(settings)  # the rest is there


def test_gallery_settings(tmp_path: Path) -> None:
    settings = _load(tmp_path, {
        "DISCORD_TOKEN": TOKEN, "WEB_PORT": "0", "WEB_HOST": "0.0.0.0",
        "PUBLIC_URL": "https://atelier.example.com/", "DISCORD_CLIENT_SECRET": " s3cret ",
        "WEB_SECRET": "a long random phrase", "DISCORD_OAUTH_URL": "http://127.0.0.1:9/authorize",
    })
    assert (settings.web_port, settings.web_host) == (0, "0.0.0.0")
    assert settings.public_url == "https://atelier.example.com"
    assert settings.discord_client_secret == "s3cret"
    assert settings.web_secret == "a long random phrase"
    assert settings.discord_oauth_url == "http://127.0.0.1:9/authorize"
    assert "s3cret" not in repr(settings) and "random phrase" not in repr(settings)


def test_adapters_are_read_per_family() -> None:
    settings = load_settings({
        "DISCORD_TOKEN": "t",
        "SD_CONTROLNETS": "canny=lllyasviel/control_v11p_sd15_canny, sdxl:canny=xinsir/cn, "
                          "sdxl:depth=/models/depth.safetensors",
        "SD_IP_ADAPTER": "sd1=h94/IP-Adapter/models/ip-adapter_sd15.safetensors",
        "SD_ANNOTATORS": "depth=depth-anything/Depth-Anything-V2-Small-hf",
        "SD_CAPTION_MODEL": "Salesforce/blip-image-captioning-large",
    }, env_file="/nonexistent")
    assert settings.sd_controlnets == (
        (None, "canny", "lllyasviel/control_v11p_sd15_canny"), ("sdxl", "canny", "xinsir/cn"),
        ("sdxl", "depth", "/models/depth.safetensors"))
    assert settings.sd_ip_adapter == (
        ("sd1", "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"),)
    assert settings.sd_annotators == (("depth", "depth-anything/Depth-Anything-V2-Small-hf"),)
    assert settings.sd_caption_model == "Salesforce/blip-image-captioning-large"
