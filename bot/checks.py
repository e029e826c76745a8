"""What Atelier runs on, short of Discord: the data folder, the database, torch and the device,
the models, the LoRA folder and Ray. Each check gives a `Finding`: one line that names the
setting it is about and says what to do. Start-up runs a few of them and stops at the first ❌
(`preflight`); `python -m bot doctor` prints them all."""

from __future__ import annotations

import enum
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from bot.config import Settings
from bot.engine.models import SINGLE_FILE_SUFFIXES, describe, model_name
from bot.engine.tiny import TINY_SOURCES

log = logging.getLogger(__name__)

GB = 1_000_000_000
LOW_SPACE = 2 * GB  # a model download, or a few thousand pictures
HUB_TIMEOUT = 5.0  # seconds start-up waits for the hub about a model not downloaded yet
DOCTOR_HUB_TIMEOUT = 15.0
RAY_TIMEOUT = 3.0
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx")


class Mark(enum.Enum):
    OK = "✅"
    WARN = "⚠️"
    FAIL = "❌"


@dataclass(frozen=True)
class Finding:
    mark: Mark
    topic: str  # the first column of doctor's table: "data folder", "model sd15"
    text: str  # stands alone (start-up prints it by itself): names the setting, says what to do


def preflight(settings: Settings) -> Iterable[Finding]:
    """The checks start-up runs before it talks to Discord, in order; the caller stops at the
    first ❌. Blocking (the disk, torch's import, the hub for a model not downloaded yet): run
    it in a thread."""
    yield check_data_dir(settings, create=True)
    device, half = check_device(settings)
    yield device
    yield from check_models(settings, half=half, hub_timeout=HUB_TIMEOUT, sizes=False,
                            unreachable=Mark.FAIL)
    if settings.lora_dir is not None:
        yield check_loras(settings)


# ---- DATA_DIR -------------------------------------------------------------------------------

def check_data_dir(settings: Settings, *, create: bool) -> Finding:
    """DATA_DIR is a folder this user can write (made here when `create`), with room left."""
    folder = settings.data_dir
    named = f"DATA_DIR={_shown(folder)}"
    fix = "set DATA_DIR to a folder this user can write"
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        return Finding(Mark.FAIL, "data folder",
                       f"{named} cannot be used: {existing} is a file, not a folder; {fix}")
    if not folder.exists():
        if not create:
            if not os.access(existing, os.W_OK | os.X_OK):
                return Finding(Mark.FAIL, "data folder", f"{named} cannot be created: {existing} "
                               f"is not writable by this user; {fix}")
            return Finding(Mark.OK, "data folder", f"{named}: not created yet (the first start "
                           f"creates it), {human_size(shutil.disk_usage(existing).free)} free")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return Finding(Mark.FAIL, "data folder",
                           f"{named} cannot be created ({reason(error)}); {fix}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".atelier-write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return Finding(Mark.FAIL, "data folder", f"{named} is not writable ({reason(error)}): "
                       f"make it writable by this user (chown, chmod), or {fix}")
    for entry in (settings.database_path, settings.images_dir, settings.thumbnails_dir,
                  settings.database_path.with_name("atelier.db-wal"),
                  settings.database_path.with_name("atelier.db-shm")):
        if entry.exists() and not os.access(entry, os.W_OK):
            return Finding(Mark.FAIL, "data folder", f"{named}: {entry} is not writable by this "
                           f"user (made by another one?): chown -R it to this user, or {fix}")
    free = shutil.disk_usage(folder).free
    if free < LOW_SPACE:
        return Finding(Mark.WARN, "data folder", f"{named}: writable, but only {human_size(free)} "
                       "free: a model download and the pictures need more")
    return Finding(Mark.OK, "data folder", f"{named}: writable, {human_size(free)} free")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _shown(path: Path) -> str:
    """A path as set, and where it is when relative."""
    return str(path) if path.is_absolute() else f"{path} ({path.absolute()})"


# ---- the database ---------------------------------------------------------------------------

def check_database(settings: Settings) -> Finding:
    """The database reads, passes a quick integrity check, and has a migration level this
    checkout knows. Read only: safe while the bot runs."""
    from storage.database import inspect_database

    path = settings.database_path
    if not path.exists():
        return Finding(Mark.OK, "database", f"{path}: not created yet (the first start creates it)")
    try:
        state = inspect_database(path)
    except sqlite3.Error as error:
        return Finding(Mark.FAIL, "database", f"{path} cannot be read as a database ({error}): "
                       "restore a backup, or move it away to start with an empty history")
    if state.check != "ok":
        return Finding(Mark.FAIL, "database", f"{path} is damaged ({state.check}): stop the bot "
                       "and restore a backup (see Storage in README.md)")
    if state.version > state.latest:
        return Finding(Mark.FAIL, "database", f"{path} was migrated by a newer Atelier (migration "
                       f"{state.version}; this checkout knows up to {state.latest}): update it")
    jobs = "" if state.jobs is None else f", {state.jobs} jobs"
    if state.version < state.latest:
        return Finding(Mark.OK, "database", f"{path}: quick check ok, migration {state.version} "
                       f"(the next start brings it to {state.latest}){jobs}")
    return Finding(Mark.OK, "database",
                   f"{path}: quick check ok, migration {state.version} (the latest){jobs}")


# ---- torch and the device -------------------------------------------------------------------

def check_torch() -> Finding:
    """The versions that decide what the engine can use."""
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    driver = _nvidia_driver()
    return Finding(Mark.OK, "torch", f"torch {torch.__version__} ({build})"
                   + (f", NVIDIA driver {driver}" if driver else "")
                   + f", diffusers {metadata.version('diffusers')}")


def check_device(settings: Settings) -> tuple[Finding, bool]:
    """The device SD_DEVICE stands for here, and whether models load in float16 there."""
    setting = settings.sd_device
    if settings.executor == "ray":
        half = settings.sd_dtype in ("auto", "float16")
        return Finding(Mark.OK, "device", f"SD_DEVICE={setting} on each Ray worker "
                       "(EXECUTOR=ray)"), half
    import torch

    from bot.engine.types import EngineError
    from bot.engine.worker import resolve_device, resolve_dtype

    try:
        device = resolve_device(setting)
    except EngineError as error:  # the engine says why it cannot use this machine's GPU
        return Finding(Mark.FAIL, "device", str(error)), False
    if device == "cuda" and not torch.cuda.is_available():
        return Finding(Mark.FAIL, "device", f"SD_DEVICE=cuda, but CUDA is not usable here: "
                       f"{_why_no_cuda()}; or set SD_DEVICE=auto to use what there is"), False
    if device == "mps" and not torch.backends.mps.is_available():
        return Finding(Mark.FAIL, "device", "SD_DEVICE=mps, but Apple's Metal (MPS) is not "
                       "usable here; set SD_DEVICE=auto to use what there is"), False
    dtype = resolve_dtype(settings.sd_dtype, device)
    half = dtype == torch.float16
    dtype_name = str(dtype).removeprefix("torch.")
    if device == "cuda":
        card = torch.cuda.get_device_properties(0)
        return Finding(Mark.OK, "device", f"cuda: {card.name}, {human_size(card.total_memory)} of "
                       f"memory, {dtype_name}"), half
    if device == "mps":
        return Finding(Mark.OK, "device", f"mps (Apple silicon), {dtype_name}"), half
    if setting == "auto":
        return Finding(Mark.WARN, "device", f"cpu, {dtype_name}: there is no CUDA or MPS "
                       "device here, so a full-size model takes minutes a picture"), half
    return Finding(Mark.OK, "device", f"cpu, {dtype_name} (SD_DEVICE=cpu)"), half


def _why_no_cuda() -> str:
    import torch

    version = torch.__version__
    if torch.version.cuda is None:
        return (f"torch {version} is a CPU build (`make clean install` on a machine with an "
                "NVIDIA GPU installs the CUDA build)")
    if shutil.which("nvidia-smi") is None:
        return f"torch {version} finds no NVIDIA GPU, and there is no NVIDIA driver (nvidia-smi)"
    return (f"torch {version} (CUDA {torch.version.cuda}) finds no GPU it can use: check "
            "nvidia-smi and CUDA_VISIBLE_DEVICES")


def _nvidia_driver() -> str | None:
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        done = subprocess.run([command, "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


# ---- models ---------------------------------------------------------------------------------

def check_models(settings: Settings, *, half: bool, hub_timeout: float, sizes: bool,
                 unreachable: Mark) -> list[Finding]:
    """Every model of SD_MODEL and SD_MODELS: here (a folder, a file, the hub's cache), or on
    the hub to download (`unreachable` marks one that the hub cannot be asked about)."""
    entries = [("SD_MODEL", model_name(settings.sd_model), settings.sd_model)]
    entries += [("SD_MODELS", name, source) for name, source in settings.sd_models]
    return [check_model(variable, name, source, half=half, hub_timeout=hub_timeout,
                        sizes=sizes, unreachable=unreachable)
            for variable, name, source in entries]


def check_model(variable: str, name: str, source: str, *, half: bool, hub_timeout: float,
                sizes: bool, unreachable: Mark) -> Finding:
    if variable == "SD_MODEL":
        topic, named = "default model", f"SD_MODEL={source}"
    else:
        topic, named = f"model {name}", f"{name}={source} in SD_MODELS"
    # 1. Here: the tiny model, a folder, a file
    if source in TINY_SOURCES:
        return Finding(Mark.OK, topic, f"{named}: made here, a small random model for tests")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            return Finding(Mark.FAIL, topic, f"{named}: this folder has no model_index.json, so "
                           "it is no diffusers model (for a checkpoint file, give the file)")
        size = f", {human_size(_tree_size(path))}" if sizes else ""
        return Finding(Mark.OK, topic,
                       f"{named}: a diffusers folder, {describe(name, source).family.label}{size}")
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            return Finding(Mark.FAIL, topic, f"{named}: a model file must end in .safetensors "
                           "or .ckpt")
        try:
            label = describe(name, source).family.label
        except (OSError, ValueError) as error:
            return Finding(Mark.FAIL, topic, f"{named} cannot be read: {error}")
        size = f", {human_size(path.stat().st_size)}" if sizes else ""
        return Finding(Mark.OK, topic, f"{named}: a checkpoint file, {label}{size}")
    if _looks_like_a_path(source):
        return Finding(Mark.FAIL, topic, f"{named}: there is no such folder or file")
    # 2. The Hugging Face cache
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        cached = try_to_load_from_cache(source, "model_index.json")
    except HFValidationError:
        return Finding(Mark.FAIL, topic, f"{named}: no such folder or file here, and not a "
                       "Hugging Face repo id (owner/name) either")
    if isinstance(cached, str):
        folder = Path(cached).parent
        size = f", {human_size(_tree_size(folder))}" if sizes else ""
        return Finding(Mark.OK, topic,
                       f"{named}: downloaded, {describe(name, source).family.label}{size}")
    # 3. The hub
    elsewhere = f"or point {variable} at a local folder or file"
    if constants.HF_HUB_OFFLINE:
        return Finding(Mark.FAIL, topic, f"{named}: not downloaded yet, and HF_HUB_OFFLINE=1 "
                       f"keeps it from being downloaded: unset it for the first start, {elsewhere}")
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(source, files_metadata=True, timeout=hub_timeout)
    except GatedRepoError:
        return Finding(Mark.FAIL, topic, f"{named}: a gated model: accept its terms on "
                       f"https://huggingface.co/{source} and log in with `hf auth login`")
    except RepositoryNotFoundError:
        return Finding(Mark.FAIL, topic, f"{named}: no such folder here, and no such model on "
                       f"the Hugging Face hub: check the spelling (owner/name, as in "
                       f"https://huggingface.co/{source})")
    except Exception as error:  # whatever else failed, the hub could not be asked
        log.debug("asking the hub about %s failed", source, exc_info=True)
        return Finding(unreachable, topic, f"{named}: not downloaded yet, and the Hugging Face "
                       f"hub cannot be reached ({reason(error)}): connect this machine to the "
                       f"internet for the first start, {elsewhere}")
    files = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
    if "model_index.json" not in files:
        return Finding(Mark.FAIL, topic, f"{named}: on the Hugging Face hub, but not a diffusers "
                       "pipeline (it has no model_index.json)")
    return Finding(Mark.OK, topic, f"{named}: not downloaded yet, about "
                   f"{human_size(download_size(files, half))} to download at the first start")


def _looks_like_a_path(source: str) -> bool:
    """Meant as a folder or a file, not a hub id (`owner/name`)."""
    return (source.startswith(("/", ".", "~", "\\")) or source.count("/") > 1
            or "\\" in source or Path(source).suffix.lower() in SINGLE_FILE_SUFFIXES)


def download_size(files: dict[str, int], half: bool) -> int:
    """Roughly what loading a hub pipeline downloads: model_index.json and its components'
    folders, where of each component's weights only one format is fetched (safetensors over
    the rest; the fp16 variant, when there is one, for a float16 model)."""
    total = files.get("model_index.json", 0)
    folders: dict[str, dict[str, int]] = {}
    for name, size in files.items():
        folder, sep, rest = name.partition("/")
        if sep:
            folders.setdefault(folder, {})[rest] = size
    for members in folders.values():
        weights = {n: s for n, s in members.items() if n.endswith(WEIGHT_SUFFIXES)}
        total += sum(s for n, s in members.items() if n not in weights)
        safetensors = {n: s for n, s in weights.items() if n.endswith(".safetensors")}
        chosen = safetensors or weights
        fp16 = {n: s for n, s in chosen.items() if _variant(n) == "fp16"}
        plain = {n: s for n, s in chosen.items() if _variant(n) is None}
        total += sum((fp16 if half and fp16 else plain or fp16).values())
    return total


def _variant(filename: str) -> str | None:
    """`fp16` for `diffusion_pytorch_model.fp16.safetensors` (and its shards,
    `model.fp16-00001-of-00002.safetensors`); None without a variant."""
    parts = Path(filename).name.split(".")
    return parts[1].split("-")[0] if len(parts) > 2 else None


def _tree_size(folder: Path) -> int:
    """Bytes under `folder`, following the links a hub snapshot is made of."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


# ---- LoRAs and Ray --------------------------------------------------------------------------

def check_loras(settings: Settings) -> Finding:
    from bot.engine.loras import lora_files

    folder = settings.lora_dir
    if folder is None:
        return Finding(Mark.OK, "LoRAs", "LORA_DIR is not set: no LoRAs")
    if not folder.is_dir():
        return Finding(Mark.FAIL, "LoRAs", f"LORA_DIR={folder} is not a folder: make it, or "
                       "unset LORA_DIR")
    names = sorted(lora_files(folder))
    if not names:
        return Finding(Mark.WARN, "LoRAs", f"LORA_DIR={folder} holds no .safetensors files yet")
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return Finding(Mark.OK, "LoRAs", f"LORA_DIR={folder}: {len(names)} ({listed})")


def check_ray(settings: Settings) -> Finding:
    """With EXECUTOR=ray: Ray is installed, and the cluster of RAY_ADDRESS answers."""
    try:
        import ray  # noqa: F401  (an optional dependency)
    except ImportError:
        return Finding(Mark.FAIL, "Ray", "EXECUTOR=ray needs Ray: pip install '.[ray]'")
    address = settings.ray_address
    if not address:
        return Finding(Mark.OK, "Ray", "RAY_ADDRESS is empty: the bot starts a local Ray")
    named = f"RAY_ADDRESS={address}"
    target = address
    if address == "auto":
        target = _local_ray_cluster() or ""
        if not target:
            return Finding(Mark.FAIL, "Ray", f"{named}: no Ray cluster runs on this machine "
                           "(`ray start --head`), or give the head's address")
    parts = urlsplit(target if "://" in target else f"tcp://{target}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        return Finding(Mark.FAIL, "Ray", f"{named}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, port), timeout=RAY_TIMEOUT).close()
    except OSError as error:
        return Finding(Mark.FAIL, "Ray", f"{named}: {host}:{port} cannot be reached "
                       f"({reason(error)}): is the head running, and its port open to here?")
    return Finding(Mark.OK, "Ray", f"{named}: {host}:{port} answers")


def _local_ray_cluster() -> str | None:
    """The address `auto` finds: the cluster Ray last started on this machine."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # no cluster, or a Ray whose internals moved: either way none found
        log.debug("looking for a local Ray cluster failed", exc_info=True)
        return None


# ---- words ----------------------------------------------------------------------------------

def reason(error: BaseException) -> str:
    """An error in a few words, on one line: `Permission denied`, `Cannot connect to host …`."""
    if isinstance(error, OSError) and error.strerror and not str(error).startswith("Cannot"):
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0] if len(lines[0]) <= 200 else lines[0][:199] + "…"


def human_size(count: float) -> str:
    if count >= GB:
        return f"{count / GB:.1f} GB"
    return f"{count / 1_000_000:.0f} MB" if count >= 1_000_000 else f"{count / 1000:.0f} kB"

