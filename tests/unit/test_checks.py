"""The checks start-up and `python -m bot doctor` share, on real folders and database files: each
gives one line that names the setting and says what to do."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from bot.checks import (
    Mark,
    check_data_dir,
    check_database,
    check_loras,
    check_model,
    check_ray,
    download_size,
    reason,
)
from bot.config import Settings
from bot.permissions import invite_url
from storage.database import migrations, open_database


def settings(**values: object) -> Settings:
    return Settings(discord_token="x", **values)  # type: ignore[arg-type]


def model(source: str, name: str = "default", **overrides: object) -> tuple[Mark, str]:
    options: dict[str, object] = dict(half=False, hub_timeout=1.0, sizes=False,
                                      unreachable=Mark.FAIL)
    options.update(overrides)
    finding = check_model("SD_MODEL", name, source, **options)  # type: ignore[arg-type]
    return finding.mark, finding.text


# ---- DATA_DIR ---------------------------------------------------------------------------------

def test_the_data_folder_is_made_at_start_and_only_looked_at_by_the_doctor(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "data"
    looked = check_data_dir(settings(data_dir=folder), create=False)
    assert looked.mark is Mark.OK and "not created yet (the first start creates it)" in looked.text
    assert not folder.exists()
    made = check_data_dir(settings(data_dir=folder), create=True)
    assert made.mark is Mark.OK and made.text.startswith(f"DATA_DIR={folder}: writable, ")
    assert folder.is_dir() and not list(folder.iterdir())  # the write probe is gone


def test_a_file_where_the_data_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    for create in (True, False):
        finding = check_data_dir(settings(data_dir=tmp_path / "data" / "atelier"), create=create)
        assert finding.mark is Mark.FAIL
        assert finding.text == (f"DATA_DIR={tmp_path / 'data' / 'atelier'} cannot be used: "
                                f"{tmp_path / 'data'} is a file, not a folder; set DATA_DIR to "
                                "a folder this user can write")


def test_a_relative_data_folder_says_where_it_is(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    finding = check_data_dir(settings(data_dir=Path("data")), create=True)
    assert finding.text.startswith(f"DATA_DIR=data ({tmp_path / 'data'}): writable, ")


# ---- the database -----------------------------------------------------------------------------

async def test_a_migrated_database_is_at_the_latest_level(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "atelier.db")
    await db.close()
    finding = check_database(settings(data_dir=tmp_path))
    latest = migrations()[-1][0]
    assert (finding.mark, finding.text) == (
        Mark.OK, f"{tmp_path / 'atelier.db'}: quick check ok, migration {latest} (the latest), "
                 "0 jobs")


def test_a_database_from_a_newer_atelier_and_one_from_an_older(tmp_path: Path) -> None:
    path = tmp_path / "atelier.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    latest = migrations()[-1][0]
    finding = check_database(settings(data_dir=tmp_path))
    assert (finding.mark, finding.text) == (
        Mark.FAIL, f"{path} was migrated by a newer Atelier (migration 999; this checkout knows "
                   f"up to {latest}): update it")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 1")
    finding = check_database(settings(data_dir=tmp_path))
    assert (finding.mark, finding.text) == (
        Mark.OK, f"{path}: quick check ok, migration 1 (the next start brings it to {latest})")


def test_the_doctor_does_not_create_the_database(tmp_path: Path) -> None:
    finding = check_database(settings(data_dir=tmp_path))
    assert finding.mark is Mark.OK and "not created yet" in finding.text
    assert not (tmp_path / "atelier.db").exists()


# ---- models -----------------------------------------------------------------------------------

def test_a_diffusers_folder_and_a_folder_that_is_not_one(tmp_path: Path,
                                                         tiny_model_dir: Path) -> None:
    assert model(str(tiny_model_dir), sizes=True)[0] is Mark.OK
    assert model(str(tiny_model_dir))[1] == (f"SD_MODEL={tiny_model_dir}: a diffusers folder, "
                                             "tiny (random, for tests)")
    assert model(str(tmp_path)) == (
        Mark.FAIL, f"SD_MODEL={tmp_path}: this folder has no model_index.json, so it is no "
                   "diffusers model (for a checkpoint file, give the file)")


@pytest.mark.parametrize("source", ["/models/gone", "./models/gone", "~/gone.safetensors",
                                    "models/sd/gone", "gone.ckpt"])
def test_a_path_that_is_not_there(source: str) -> None:
    assert model(source) == (Mark.FAIL, f"SD_MODEL={source}: there is no such folder or file")


def test_a_file_that_is_no_checkpoint(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("")
    assert model(str(notes)) == (Mark.FAIL, f"SD_MODEL={notes}: a model file must end in "
                                            ".safetensors or .ckpt")


def test_a_name_that_is_no_repo_id() -> None:
    assert model("not a repo id!") == (
        Mark.FAIL, "SD_MODEL=not a repo id!: no such folder or file here, and not a Hugging Face "
                   "repo id (owner/name) either")


def test_an_extra_model_names_its_entry_in_sd_models() -> None:
    finding = check_model("SD_MODELS", "anime", "/models/anime", half=False, hub_timeout=1.0,
                          sizes=False, unreachable=Mark.FAIL)
    assert finding.topic == "model anime"
    assert finding.text == "anime=/models/anime in SD_MODELS: there is no such folder or file"


def test_what_loading_a_hub_pipeline_downloads() -> None:
    files = {
        "model_index.json": 1,
        "sd-v1-5.safetensors": 10**9,  # a single file at the top: not part of the pipeline
        "unet/config.json": 2,
        "unet/diffusion_pytorch_model.safetensors": 400,
        "unet/diffusion_pytorch_model.fp16.safetensors": 200,
        "unet/diffusion_pytorch_model.non_ema.safetensors": 999,
        "unet/diffusion_pytorch_model.bin": 401,
        "text_encoder/model.fp16-00001-of-00002.safetensors": 30,
        "text_encoder/model.fp16-00002-of-00002.safetensors": 30,
        "text_encoder/model-00001-of-00002.safetensors": 60,
        "text_encoder/model-00002-of-00002.safetensors": 60,
        "text_encoder/model.safetensors.index.json": 4,
        "vae/diffusion_pytorch_model.bin": 80,  # no safetensors: the .bin it is
        "tokenizer/vocab.json": 8,
    }
    small = 1 + 2 + 4 + 8
    assert download_size(files, half=False) == small + 400 + 120 + 80
    assert download_size(files, half=True) == small + 200 + 60 + 80
    # Only an fp16 variant: loading takes it whatever the precision.
    assert download_size({"unet/m.fp16.safetensors": 5}, half=False) == 5


# ---- LoRAs, words -----------------------------------------------------------------------------

def test_the_lora_folder(tmp_path: Path) -> None:
    assert check_loras(settings()).text == "LORA_DIR is not set: no LoRAs"
    assert check_loras(settings(lora_dir=tmp_path)).mark is Mark.WARN
    for name in ("detail", "pixel-art"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    finding = check_loras(settings(lora_dir=tmp_path))
    assert (finding.mark, finding.text) == (Mark.OK, f"LORA_DIR={tmp_path}: 2 (detail, pixel-art)")
    missing = check_loras(settings(lora_dir=tmp_path / "gone"))
    assert missing.mark is Mark.FAIL


def test_an_error_is_told_in_one_line() -> None:
    long_error = OSError("Client error '404 Not Found' for url 'x'\nFor more information…\n\nNo")
    assert reason(long_error) == "Client error '404 Not Found' for url 'x'"
    assert reason(PermissionError(13, "Permission denied")) == "Permission denied"
    assert reason(TimeoutError()) == "TimeoutError"


def test_the_invite_link_asks_for_the_commands_scope_and_what_the_bot_uses() -> None:
    assert invite_url(1250000000000000001) == (
        "https://discord.com/oauth2/authorize?client_id=1250000000000000001"
        "&scope=bot+applications.commands&permissions=117760")


def test_the_ray_cluster_of_ray_address(unused_tcp_port: int) -> None:
    ray = "ray"
    assert check_ray(settings(executor=ray)).text == (
        "RAY_ADDRESS is empty: the bot starts a local Ray")
    closed = check_ray(settings(executor=ray, ray_address=f"127.0.0.1:{unused_tcp_port}"))
    assert closed.mark is Mark.FAIL
    assert closed.text.startswith(f"RAY_ADDRESS=127.0.0.1:{unused_tcp_port}: "
                                  f"127.0.0.1:{unused_tcp_port} cannot be reached (")
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        port = head.getsockname()[1]
        answered = check_ray(settings(executor=ray, ray_address=f"ray://127.0.0.1:{port}"))
    assert (answered.mark, answered.text) == (
        Mark.OK, f"RAY_ADDRESS=ray://127.0.0.1:{port}: 127.0.0.1:{port} answers")
    assert check_ray(settings(executor=ray, ray_address="head-node")).text == (
        "RAY_ADDRESS=head-node: expected auto, host:port or ray://host:port")
