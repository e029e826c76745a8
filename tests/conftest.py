"""Fixtures shared by every layer of the suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Any accidental lookup on the model hub fails at once instead of hanging on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bot.engine.tiny import build_tiny, build_tiny_flux, build_tiny_sd3  # noqa: E402
from tests.adapters import tiny_adapters  # noqa: E402,F401
from tests.double.fixtures import discord_double  # noqa: E402,F401
from tests.hub import hub_double  # noqa: E402,F401
from tests.models import family_files, hub_cache, model_files  # noqa: E402,F401


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` pipeline, built once per test session."""
    return build_tiny(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def data_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A fresh DATA_DIR whose model cache already holds the tiny pipeline."""
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    (data / "models" / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    return data


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny-flux` pipeline (FLUX.1 [schnell]-like), built once per test session."""
    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny-sd3` pipeline (SD 3.5-like, with T5), built once per test session."""
    return build_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")
