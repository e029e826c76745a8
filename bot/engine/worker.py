"""The worker: owns the diffusers pipelines and runs batches of requests on one device.

The same class runs in the executor's thread and, later, inside a process on another machine: its
inputs and outputs are the plain dataclasses of `bot.engine.types`."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import itertools
import logging
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from bot.engine import canvas
from bot.engine.adapters import AdapterConfig, architecture
from bot.engine.captioning import Captioner
from bot.engine.conditioning import Conditioning, encode_pair
from bot.engine.control import ControlModels, control_map
from bot.engine.families import Architecture, Family
from bot.engine.loading import Loading, LoadProgress, reporting
from bot.engine.loras import LoraFolder, find_lora
from bot.engine.models import SINGLE_FILE_SUFFIXES, ModelSpec
from bot.engine.modes import MODES, Inputs, ModeSpec
from bot.engine.optimise import compile_pipeline, configure_compiler, optimise, warm_up_requests
from bot.engine.pngmeta import a1111_parameters, encode_png
from bot.engine.preview import (
    SD_PROJECTION,
    SDXL_PROJECTION,
    Projection,
    fit_projection,
    latents_to_rgb,
    rgb_to_png,
)
from bot.engine.prompting import strip_lora_tags
from bot.engine.references import ReferenceModels, give_embeds
from bot.engine.samplers import make_scheduler, sampler, sampler_refusal
from bot.engine.sentences import encode_flux, encode_sd3
from bot.engine.tiny import TINY_SOURCES
from bot.engine.tiny import build as build_tiny
from bot.engine.types import (
    CaptionRequest,
    EngineError,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    Mode,
    Work,
    WorkResult,
)

log = logging.getLogger(__name__)

PREVIEW_INTERVAL = 1.0  # seconds between previews decoded from latents
TILED_DECODE_AREA = 2.0  # decode in tiles above this many times the model's native area
OFFLOADED_KEPT = 2  # models moved off the GPU that stay in RAM, for a quick switch back
ADAPTERS_KEPT = 8  # LoRA adapters kept loaded in each model
INPAINT_SUFFIX = ":inpaint"  # the name a model's dedicated inpainting checkpoint is loaded under
OFFLOADS = ("none", "model", "sequential")  # SD_OFFLOAD


def _encode_clip(pipe: Any, family: Family, prompt: str, negative: str,
                 device: Any) -> tuple[Conditioning, Conditioning]:
    return encode_pair(pipe, prompt, negative, device)


# How each architecture's prompts become embeddings: CLIP in chunks, with emphasis and `::`
# blends (`bot.engine.conditioning`), or one sentence for T5 (`bot.engine.sentences`).
PROMPT_ENCODERS = {Architecture.SD: _encode_clip, Architecture.FLUX: encode_flux,
                   Architecture.SD3: encode_sd3}


@dataclass(frozen=True)
class WorkerConfig:
    models: tuple[ModelSpec, ...]
    device: str = "auto"
    dtype: str = "auto"
    models_loaded: int = 1
    max_batch: int = 8
    cache_dir: str = "data/models"
    compile: bool = False
    lora_dir: str | None = None
    # torch.compile's backend with `compile`; tests trace with `eager` (the same graphs and
    # guards, without generating code, which takes minutes on a CPU)
    compile_backend: str = "inductor"
    # threads that finish pictures (safety check, PNG encoding) while the engine's thread goes
    # on with the next batch; 0 = on the engine's thread itself (benchmarks compare the two)
    finish_threads: int = 2
    # ControlNets, IP-Adapters, annotators and the captioning model
    adapters: AdapterConfig = AdapterConfig()
    # SD_OFFLOAD: `model` keeps each model in RAM and moves its parts (text encoders, denoiser,
    # VAE) onto the GPU one at a time as a call needs them; `sequential` moves single layers,
    # for the smallest cards (and slowest runs). CUDA only.
    offload: str = "none"


@dataclass(frozen=True)
class StepReport:
    """Progress of a pipeline call, for the jobs in it."""

    job_ids: tuple[str, ...]
    step: int
    total: int
    previews: dict[str, bytes] = field(default_factory=dict, repr=False)


Reporter = Callable[[StepReport], None]
CancelCheck = Callable[[str], bool]
Outcome = WorkResult | BaseException
Finishing = Future[WorkResult]  # a job's pictures, being finished on another thread


@dataclass
class EngineTimes:
    """Seconds the engine's thread was busy running batches, and how much of that inside
    pipeline calls (denoising and decoding, less the step callbacks): the rest is the GPU's
    idle time whenever the CPU work is not hidden behind queued GPU work."""

    engine: float = 0.0
    pipeline: float = 0.0
    images: int = 0

    @property
    def outside(self) -> float:
        return max(0.0, self.engine - self.pipeline)


def gpu_problem() -> str | None:
    """Why the NVIDIA GPU this machine shows cannot be used, in one line; None where it can be,
    or where there is none."""
    import torch

    from bot.engine.cuda import nvidia_smi, unusable_gpu

    if torch.cuda.is_available():
        return None
    return unusable_gpu(False, torch.__version__, torch.version.cuda, nvidia_smi())


class _JobRefused(Exception):
    """One job of a batch cannot run (its prompt is too long, say); the others can."""

    def __init__(self, job_id: str, error: EngineError) -> None:
        super().__init__(str(error))
        self.job_id = job_id
        self.error = error


def resolve_device(setting: str) -> str:
    """The device `SD_DEVICE` stands for. `auto` takes cuda, else mps, else the CPU, but never
    the CPU when the machine has an NVIDIA GPU that torch cannot use: a model would then run
    there in float32, tens of times slower, and nobody would know why."""
    import torch

    if setting in ("cpu", "mps"):
        return setting
    if torch.cuda.is_available():
        return "cuda"
    problem = gpu_problem()
    if problem is not None:
        raise EngineError(f"{problem}; or set SD_DEVICE=cpu to run on the CPU")
    if setting == "cuda":
        return setting
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(setting: str, device: str, family: Family | None = None) -> Any:
    """The dtype `SD_DTYPE` stands for on `device`. `auto` is float32 on the CPU; on a GPU,
    what the family needs (FLUX.1 and SD 3.5: bfloat16, where the card has it), else float16."""
    import torch

    if setting != "auto":
        return getattr(torch, setting)
    if device not in ("cuda", "mps"):
        return torch.float32
    if family is not None and family.dtype is not None:
        wanted = getattr(torch, family.dtype)
        if wanted != torch.bfloat16 or device != "cuda" or torch.cuda.is_bf16_supported():
            return wanted
        log.warning("this GPU has no bfloat16: %s runs in float16, where its activations may "
                    "overflow (black pictures); SD_DTYPE=float32 avoids that at twice the memory",
                    family.label)
    return torch.float16


def import_libraries() -> float:
    """Import torch, diffusers and transformers; returns the seconds it took.

    Importing them holds the GIL for seconds (native libraries load, thousands of modules run),
    which would stall the event loop just as the first interactions arrive: the bot does it
    before it connects to Discord (in a thread, so the loop stays free meanwhile), rather than
    leaving it to the engine's thread."""
    started = time.perf_counter()
    import torch  # noqa: F401

    # Quiet first: importing the pipelines makes transformers warn about backends Atelier does
    # not use (torchvision for image processors), which only worries whoever reads the log.
    _quiet_libraries()
    from diffusers import (  # noqa: F401  (pipelines import lazily, on first use)
        AutoPipelineForImage2Image,
        AutoPipelineForText2Image,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    return time.perf_counter() - started


def _quiet_libraries() -> None:
    import diffusers
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"diffusers\.")
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@dataclass(frozen=True)
class _Adapter:
    name: str  # the adapter's name inside the pipeline
    stamp: tuple[int, int]  # the file's mtime and size when it was loaded


@dataclass
class _Loaded:
    spec: ModelSpec
    pipe: Any
    safety: tuple[Any, Any] | None  # (checker, feature extractor) when the model ships one
    preview: Projection = SD_PROJECTION  # latents to the colours of a live preview
    offloaded: bool = False  # SD_OFFLOAD: it lives in RAM, its parts visit the GPU
    compiled: bool = False
    # LoRAs loaded into this model by name, least recently used first.
    adapters: OrderedDict[str, _Adapter] = field(default_factory=OrderedDict)
    # Compiled models: the LoRAs merged into the weights (file, stamp, weight), and the weights
    # they changed as they were, by `component.module`
    merged: tuple[tuple[str, tuple[int, int], float], ...] = ()
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)


class DeviceFault(Exception):
    """The GPU failed in a way that leaves it unusable to this process (CUDA's "an illegal
    memory access was encountered", a device-side assert): every later call would fail too,
    so the worker must end and be built again, and its batch run elsewhere."""


FAULT_MARKERS = ("CUDA error", "CUBLAS_STATUS_", "CUDNN_STATUS_", "cuDNN error",
                 "device-side assert", "unspecified launch failure")


def is_device_fault(error: BaseException) -> bool:
    """Whether `error` is a GPU error other than running out of memory."""
    import torch

    if _is_out_of_memory(error):
        return False
    accelerator = getattr(torch, "AcceleratorError", None)  # CUDA errors, from torch 2.8
    if accelerator is not None and isinstance(error, accelerator):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error)
                                                   for marker in FAULT_MARKERS)


class Worker:
    """Loads models lazily, keeps at most `models_loaded` on the device, runs batches."""

    def __init__(self, config: WorkerConfig) -> None:
        _quiet_libraries()
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if self.device == "cpu":
            # Leave a core to the event loop: busy-waiting math threads on every core starve it,
            # and slow each other down badly when anything else runs on the machine.
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        self.specs = {spec.name: spec for spec in config.models}
        if config.compile:
            configure_compiler(2 * len(config.models))  # with their inpainting checkpoints
        # LoRA adapters patch the separate q/k/v projections: left unfused where LoRAs may be used.
        self.fuse_qkv = config.lora_dir is None
        self._loras = LoraFolder(config.lora_dir)
        self._adapter_ids = itertools.count(1)
        self._lora_cache: OrderedDict[tuple[str, tuple[int, int]], dict[str, Any]] = OrderedDict()
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self.jobs_done = 0
        self._finishers = (ThreadPoolExecutor(config.finish_threads, "atelier-finish")
                           if config.finish_threads else None)
        self._times = EngineTimes()
        self._unfinished: set[Finishing] = set()
        # Where the loading of a model stands (None: not loading); `on_loading` hears of each
        # change, on this worker's thread.
        self.loading: Loading | None = None
        self.on_loading: Callable[[Loading | None], None] | None = None
        self._callback_seconds = 0.0
        self._controls = ControlModels(config.adapters, self.device, self.dtype)
        self._references = ReferenceModels(config.adapters, self.device, self.dtype)
        self._captioner = Captioner(config.adapters.caption_model, self.device, self.dtype)

    # ---- models -----------------------------------------------------------------------------

    def dtype_for(self, spec: ModelSpec) -> Any:
        """The dtype `spec` runs in: its own SD_DTYPE entry, else SD_DTYPE (`auto`: what its
        family needs)."""
        return resolve_dtype(spec.dtype or self.config.dtype, self.device, spec.family)

    def _load(self, spec: ModelSpec) -> _Loaded:
        import diffusers
        from diffusers import AutoPipelineForText2Image, StableDiffusionXLPipeline

        started = time.perf_counter()
        source = Path(spec.source).expanduser()
        dtype = self.dtype_for(spec)
        # SD_VAE: the model's own VAE is not even read
        vae = self._load_vae(spec, dtype)
        parts: dict[str, Any] = {"vae": vae} if vae is not None else {}
        if spec.family.arch is Architecture.SD3 and not spec.family.t5:
            # SD_NO_T5: its largest part is never read; CLIP alone reads the prompt
            parts.update(text_encoder_3=None, tokenizer_3=None)
        if spec.source in TINY_SOURCES:
            folder = build_tiny(spec.source, Path(self.config.cache_dir))
            pipe = AutoPipelineForText2Image.from_pretrained(folder, dtype=dtype, **parts)
        elif source.is_dir():
            pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype, **parts)
        elif source.suffix.lower() in SINGLE_FILE_SUFFIXES:
            cls = (StableDiffusionXLPipeline if spec.sdxl
                   else getattr(diffusers, spec.family.traits.single_file))
            try:
                pipe = cls.from_single_file(str(source), dtype=dtype, **parts)
            except OSError as error:
                # diffusers reads the components' configurations from the base model's hub
                # repository (or the Hugging Face cache): say so instead of a cache traceback.
                log.error("cannot load %s: %s", source, error)
                raise EngineError(
                    f"Model `{spec.name}` could not be loaded: a single-file checkpoint needs the "
                    f"configuration of its base model ({spec.family.label}) from the Hugging Face "
                    "hub or cache, and it was not found"
                ) from error
        else:
            pipe = self._load_from_hub(spec.source, dtype, parts)
        return self._prepare(spec, pipe, started)

    def _load_vae(self, spec: ModelSpec, dtype: Any) -> Any | None:
        """The VAE that SD_VAE gives `spec` (a diffusers folder, or one holding `vae/`, a single
        file, or a hub repository), or None."""
        if spec.vae is None:
            return None
        from diffusers import AutoencoderKL

        source = Path(spec.vae).expanduser()
        try:
            if source.is_dir():
                inner = "vae" if (source / "vae" / "config.json").is_file() else None
                return AutoencoderKL.from_pretrained(source, subfolder=inner, dtype=dtype)
            if source.suffix.lower() in SINGLE_FILE_SUFFIXES:
                return AutoencoderKL.from_single_file(str(source), dtype=dtype)
            return AutoencoderKL.from_pretrained(spec.vae, dtype=dtype)
        except (OSError, ValueError) as error:
            log.error("cannot load the VAE %s of model %s: %s", spec.vae, spec.name, error)
            raise EngineError(f"The VAE of model `{spec.name}` (SD_VAE) could not be "
                              "loaded") from error

    def adopt(self, spec: ModelSpec, pipe: Any) -> None:
        """Serve `spec` with a pipeline built elsewhere (benchmarks build full-size models from
        their configs); it is prepared like a loaded one. Call from the worker's thread."""
        self.specs[spec.name] = spec
        self._make_room()
        self._loaded[spec.name] = loaded = self._prepare(spec, pipe, time.perf_counter())
        if loaded.compiled:
            self._warm_up(loaded)

    def _prepare(self, spec: ModelSpec, pipe: Any, started: float) -> _Loaded:
        """Move a pipeline to the device (or set up its offloading), take out its safety
        checker, optimise it; and fit its previews where its latents need it."""
        safety = None
        if getattr(pipe, "safety_checker", None) is not None:
            # Run the checker ourselves: the pipeline would black out flagged images, but whether
            # they may be shown depends on the channel, which only the bot knows.
            safety = (pipe.safety_checker.to(self.device), pipe.feature_extractor)
            pipe.safety_checker = None
        offloaded = self._place(pipe)
        pipe.set_progress_bar_config(disable=True)
        applied = optimise(pipe, self.device, fuse_qkv=self.fuse_qkv)
        if offloaded:
            applied.append(f"{self.config.offload} CPU offload")
        compiled = self.config.compile and spec.family.traits.denoiser == "unet"
        if compiled:
            compile_pipeline(pipe, self.config.compile_backend)
            applied.append("compiled")
        elif self.config.compile:
            log.info("model %s (%s) is not compiled: SD_COMPILE compiles UNet models only",
                     spec.name, spec.family.label)
        preview = SDXL_PROJECTION if spec.sdxl else SD_PROJECTION
        if spec.family.arch is not Architecture.SD:
            preview = fit_projection(pipe.vae, pipe._execution_device)
        log.info("loaded model %s (%s) on %s in %s in %.1f s%s", spec.name, spec.family.label,
                 self.device, str(pipe.dtype).removeprefix("torch."),
                 time.perf_counter() - started, f" ({', '.join(applied)})" if applied else "")
        return _Loaded(spec, pipe, safety, preview, offloaded, compiled)

    def _place(self, pipe: Any) -> bool:
        """Put `pipe` on the device, or with SD_OFFLOAD set it up to visit it part by part;
        returns whether it is offloaded."""
        if self.config.offload == "none" or self.device != "cuda":
            if self.config.offload != "none":
                log.info("SD_OFFLOAD=%s does nothing on %s", self.config.offload, self.device)
            pipe.to(self.device)
            return False
        if self.config.offload == "model":
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.enable_sequential_cpu_offload(device=self.device)
        return True

    def _load_from_hub(self, repo_id: str, dtype: Any, parts: dict[str, Any]) -> Any:
        import torch
        from diffusers import AutoPipelineForText2Image

        if dtype == torch.float16:
            try:
                return AutoPipelineForText2Image.from_pretrained(
                    repo_id, dtype=dtype, variant="fp16", **parts
                )
            except (OSError, ValueError):
                log.info("%s has no fp16 variant; loading the full weights", repo_id)
        return AutoPipelineForText2Image.from_pretrained(repo_id, dtype=dtype, **parts)

    def model(self, name: str) -> _Loaded:
        """The loaded model `name`, loading it (and moving the least recently used off) first
        if needed."""
        if name in self._loaded:
            self._loaded.move_to_end(name)
            loaded = self._loaded[name]
            if loaded.pipe.device.type != self.device and not loaded.offloaded:
                started = time.perf_counter()
                self._make_room(keep=name)
                self._move(loaded, self.device)
                log.info("moved model %s back to %s in %.1f s", name, self.device,
                         time.perf_counter() - started)
            return loaded
        try:
            spec = self.specs[name]
        except KeyError:
            raise EngineError(f"Unknown model `{name}`") from None
        self._make_room()
        try:
            with reporting(LoadProgress(name, self._set_loading)):
                loaded = self._load(spec)
            self._loaded[name] = loaded
            if loaded.compiled:
                self._warm_up(loaded)
        finally:
            self._set_loading(None)
        return loaded

    def _set_loading(self, loading: Loading | None) -> None:
        self.loading = loading
        if self.on_loading is not None:
            self.on_loading(loading)

    def _warm_up(self, loaded: _Loaded) -> None:
        """Run what the bot asks of the model once each (`warm_up_requests`), so that its
        graphs are compiled now rather than while a user waits; a model that cannot be
        compiled is not kept."""
        started = time.perf_counter()
        inpainting = loaded.pipe.unet.config.get("in_channels") == 9
        requests = warm_up_requests(loaded.spec, self.config.max_batch, inpainting)
        try:
            for done, request in enumerate(requests):
                self._set_loading(Loading(loaded.spec.name, 100 * done // len(requests),
                                          "compiling"))
                for finishing in self._run_together([request], None,
                                                    lambda job_id: False).values():
                    finishing.result()
        except BaseException:
            del self._loaded[loaded.spec.name]
            raise
        log.info("warmed up model %s for compiled graphs: %d requests in %.1f s",
                 loaded.spec.name, len(requests), time.perf_counter() - started)

    def loaded_models(self) -> list[str]:
        """Models in memory, least recently used first, with where they are: `name@cuda`
        (`name@cuda (offloaded)` for one that SD_OFFLOAD keeps in RAM)."""
        return [f"{name}@{self.device} (offloaded)" if loaded.offloaded
                else f"{name}@{loaded.pipe.device.type}" for name, loaded in self._loaded.items()]

    def _make_room(self, keep: str | None = None) -> None:
        """Before another model comes onto the device, move the least recently used ones off so
        that at most `models_loaded` are there. They wait in RAM (switching back is a copy, not
        a load from disk), at most `OFFLOADED_KEPT` of them; on the CPU, where the device is the
        RAM, they are dropped, and so are models that SD_OFFLOAD keeps in RAM anyway (at most
        `models_loaded` of those: each is as large as the card could not hold)."""
        on_device = [n for n, m in self._loaded.items()
                     if n != keep and (m.pipe.device.type == self.device or m.offloaded)]
        if len(on_device) >= self.config.models_loaded:
            self.drain()  # finishing threads may still run a safety checker about to move
        while len(on_device) >= self.config.models_loaded:
            name = on_device.pop(0)
            started = time.perf_counter()
            if self.device == "cpu" or self._loaded[name].offloaded:
                del self._loaded[name]
                self._free_memory()
                log.info("unloaded model %s in %.1f s", name, time.perf_counter() - started)
                continue
            self._move(self._loaded[name], "cpu")
            self._free_memory()
            log.info("moved model %s off %s in %.1f s", name, self.device,
                     time.perf_counter() - started)
        waiting = [n for n, m in self._loaded.items()
                   if n != keep and m.pipe.device.type != self.device and not m.offloaded]
        while len(waiting) > OFFLOADED_KEPT:
            name = waiting.pop(0)
            del self._loaded[name]
            gc.collect()
            log.info("unloaded model %s from memory", name)

    @staticmethod
    def _move(loaded: _Loaded, device: str) -> None:
        loaded.pipe.to(device)
        if loaded.safety is not None:
            loaded.safety[0].to(device)

    # ---- LoRA -------------------------------------------------------------------------------

    def _use_loras(self, loaded: _Loaded, loras: tuple[tuple[str, float], ...]) -> None:
        """Make exactly `loras` active at their weights. Adapters stay loaded in the model, so
        the next job with the same LoRA does not read it from disk again."""
        if self.config.compile:
            self._merge_loras(loaded, loras)
            return
        pipe = loaded.pipe
        if not loras:
            if loaded.adapters:
                pipe.disable_lora()
            return
        wanted = {name for name, _ in loras}
        names = [self._adapter(loaded, name, wanted) for name, _ in loras]
        pipe.enable_lora()
        pipe.set_adapters(names, [weight for _, weight in loras])

    def _adapter(self, loaded: _Loaded, name: str, wanted: set[str]) -> str:
        """The adapter of LoRA `name` in `loaded`, loaded from LORA_DIR unless it is already
        (and the file has not changed since)."""
        files = self._loras.files()
        found = find_lora(files, name)
        if found is None:
            raise EngineError(f"LoRA `{name}` is not in LORA_DIR")
        path = files[found]
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = loaded.adapters.get(found)
        if cached is not None and cached.stamp == stamp:
            loaded.adapters.move_to_end(found)
            return cached.name
        if cached is not None:
            self._drop_adapter(loaded, found)
        for oldest in [n for n in loaded.adapters if n not in wanted]:
            if len(loaded.adapters) < ADAPTERS_KEPT:
                break
            self._drop_adapter(loaded, oldest)

        from safetensors.torch import load_file

        adapter = f"lora_{next(self._adapter_ids)}"  # file names may hold dots; adapters not
        started = time.perf_counter()
        try:
            with _peft_quiet():
                loaded.pipe.load_lora_weights(load_file(path), adapter_name=adapter)
            present = loaded.pipe.get_list_adapters().values()
            if not any(adapter in names for names in present):
                # diffusers loads nothing, only warning, from a LoRA none of whose layers the
                # model has (an SD LoRA in a FLUX model)
                raise ValueError("none of its layers are in the model")
        except Exception as error:
            log.warning("LoRA %s does not load into model %s: %s", found, loaded.spec.name, error)
            try:
                with _peft_quiet():
                    loaded.pipe.delete_adapters([adapter])
            except Exception:  # nothing of it was added
                pass
            raise EngineError(
                f"LoRA `{found}` does not fit model `{loaded.spec.name}` "
                f"({loaded.spec.family.label})"
            ) from error
        loaded.adapters[found] = _Adapter(adapter, stamp)
        log.info("loaded LoRA %s into model %s in %.2f s", found, loaded.spec.name,
                 time.perf_counter() - started)
        return adapter

    def _merge_loras(self, loaded: _Loaded, loras: tuple[tuple[str, float], ...]) -> None:
        """A compiled model gets its LoRAs merged into its weights: loaded as adapters, fused,
        and the adapters removed again, so the model keeps the structure its graphs were
        compiled for (adapter layers, their names and weights would each recompile it). The
        weights they change are kept as they were, and put back before the next merge:
        subtracting a LoRA again would drift, in float16, a little further each time."""
        files = self._loras.files()
        wanted: list[tuple[str, tuple[int, int], float]] = []
        for name, weight in loras:
            found = find_lora(files, name)
            if found is None:
                raise EngineError(f"LoRA `{name}` is not in LORA_DIR")
            stat = files[found].stat()
            wanted.append((found, (stat.st_mtime_ns, stat.st_size), weight))
        if tuple(wanted) == loaded.merged:
            return
        pipe = loaded.pipe
        self._unmerge(loaded)
        if not wanted:
            return
        started = time.perf_counter()
        names = [f"merge_{index}" for index in range(len(wanted))]
        try:
            for adapter, (found, stamp, _) in zip(names, wanted, strict=True):
                try:
                    with _peft_quiet():
                        pipe.load_lora_weights(dict(self._lora_weights(files[found], stamp)),
                                               adapter_name=adapter)
                except Exception as error:
                    log.warning("LoRA %s does not load into model %s: %s", found,
                                loaded.spec.name, error)
                    raise EngineError(f"LoRA `{found}` does not fit model `{loaded.spec.name}` "
                                      f"({loaded.spec.family.label})") from None
            pipe.set_adapters(names, [weight for _, _, weight in wanted])
            self._keep_originals(loaded)
            loaded.merged = tuple(wanted)  # from here, `_unmerge` puts the weights back
            parts = [part for part in ("unet", "text_encoder", "text_encoder_2")
                     if getattr(pipe, part, None) is not None]
            pipe.fuse_lora(components=parts, adapter_names=names)
        except BaseException:
            with _peft_quiet():
                pipe.unload_lora_weights()
            self._unmerge(loaded)
            raise
        with _peft_quiet():
            pipe.unload_lora_weights()  # the layers go; the fused weights stay
        log.info("merged LoRAs %s into model %s in %.2f s",
                 ", ".join(f"{found}:{weight:g}" for found, _, weight in wanted),
                 loaded.spec.name, time.perf_counter() - started)

    def _lora_weights(self, path: Path, stamp: tuple[int, int]) -> dict[str, Any]:
        """A LoRA file's tensors, read once while it does not change (a few recent ones)."""
        key = (str(path), stamp)
        cached = self._lora_cache.get(key)
        if cached is None:
            from safetensors.torch import load_file

            cached = self._lora_cache[key] = load_file(path)
            while len(self._lora_cache) > ADAPTERS_KEPT:
                self._lora_cache.popitem(last=False)
        self._lora_cache.move_to_end(key)
        return cached

    @staticmethod
    def _keep_originals(loaded: _Loaded) -> None:
        """Copy, once, each weight that the loaded adapters are about to change."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for part in ("unet", "text_encoder", "text_encoder_2"):
            model = getattr(loaded.pipe, part, None)
            if model is None:
                continue
            for path, module in model.named_modules():
                key = f"{part}.{path}"
                if isinstance(module, BaseTunerLayer) and key not in loaded.originals:
                    base = module.get_base_layer()
                    loaded.originals[key] = {
                        name: tensor.detach().to("cpu", copy=True)
                        for name, tensor in base.named_parameters(recurse=False)}

    @staticmethod
    def _unmerge(loaded: _Loaded) -> None:
        """Put back the weights merged LoRAs changed."""
        import torch

        if not loaded.merged:
            return
        with torch.no_grad():
            for key, tensors in loaded.originals.items():
                part, _, path = key.partition(".")
                module = getattr(loaded.pipe, part).get_submodule(path)
                for name, original in tensors.items():
                    getattr(module, name).copy_(original)
        loaded.merged = ()

    @staticmethod
    def _drop_adapter(loaded: _Loaded, name: str) -> None:
        adapter = loaded.adapters.pop(name)
        with _peft_quiet():
            loaded.pipe.delete_adapters([adapter.name])
        log.info("unloaded LoRA %s from model %s", name, loaded.spec.name)

    def _free_memory(self) -> None:
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    # ---- generation -------------------------------------------------------------------------

    def run(
        self,
        requests: Sequence[Work],
        report: Reporter | None = None,
        cancelled: CancelCheck = lambda job_id: False,
    ) -> dict[str, Outcome]:
        """Run compatible requests together and wait for their pictures; each job gets its
        result or its own exception. Raises `DeviceFault` when the GPU failed for good."""
        return {job_id: _outcome(finishing)
                for job_id, finishing in self.start(requests, report, cancelled).items()}

    def start(
        self,
        requests: Sequence[Work],
        report: Reporter | None = None,
        cancelled: CancelCheck = lambda job_id: False,
    ) -> dict[str, Finishing]:
        """Run compatible requests together on this thread, up to their decoded pictures, and
        hand those to the finishing threads (safety check, PNGs), so that this thread can start
        the next batch meanwhile. Each job's future gets its result or its own `EngineError`;
        a job cancelled before its pictures were made gets none. Raises `DeviceFault` when the
        GPU failed for good."""
        started = time.perf_counter()
        failed = False
        fault = ""
        try:
            finishing = self._run_work(requests, report, cancelled)
        except _JobRefused as refused:
            others = [request for request in requests if request.job_id != refused.job_id]
            finishing = self.start(others, report, cancelled) if others else {}
            return {**finishing, refused.job_id: _failed(_bare(refused.error))}
        except EngineError as error:
            return {request.job_id: _failed(_bare(error)) for request in requests}
        except Exception as error:
            if is_device_fault(error):
                log.error("the GPU failed on a batch of %d jobs", len(requests), exc_info=True)
                fault = str(error).strip().splitlines()[0]
            elif len(requests) == 1:
                log.exception("job %s failed", requests[0].job_id)
                return {requests[0].job_id: _failed(
                    EngineError("The image pipeline failed on this job"))}
            else:
                log.warning("a batch of %d jobs failed; running them one by one", len(requests),
                            exc_info=True)
                failed = True
        finally:
            self._times.engine += time.perf_counter() - started
        if fault:
            raise DeviceFault(fault)
        if failed:
            # Out of the handler first: its traceback holds the failed call's tensors.
            self._free_memory()
            # One bad request must not fail the others: run each alone to find it.
            finishing = {}
            for request in requests:
                finishing.update(self.start([request], report, cancelled))
            return finishing
        self.jobs_done += len(requests)
        log.debug("ran %d jobs in %.2f s", len(requests), time.perf_counter() - started)
        return finishing

    @property
    def times(self) -> EngineTimes:
        """Where the engine's thread spent its time so far."""
        return replace(self._times)

    def finish_on(self, threads: int) -> None:
        """Finish pictures on `threads` threads from now on (0: on the engine's own thread), as
        `finish_threads` would; benchmarks compare the two on one prepared model."""
        self.drain()
        old, self._finishers = self._finishers, (
            ThreadPoolExecutor(threads, "atelier-finish") if threads else None)
        if old is not None:
            old.shutdown(wait=True)

    def drain(self) -> None:
        """Wait until every picture handed to the finishing threads is finished."""
        concurrent.futures.wait(list(self._unfinished))

    def _run_work(self, requests: Sequence[Work], report: Reporter | None,
                  cancelled: CancelCheck) -> dict[str, Finishing]:
        """Pictures, or (for `/describe`) captions: a batch is all of one kind."""
        if all(isinstance(request, CaptionRequest) for request in requests):
            return self._caption([r for r in requests if isinstance(r, CaptionRequest)])
        pictures = [request for request in requests if isinstance(request, GenerationRequest)]
        if len(pictures) != len(requests):
            raise ValueError("requests in one batch must share their batch key")
        return self._run_together(pictures, report, cancelled)

    def _caption(self, requests: Sequence[CaptionRequest]) -> dict[str, Finishing]:
        finishing: dict[str, Finishing] = {}
        for job_id, result in self._captioner.run(requests).items():
            future: Finishing = Future()
            future.set_result(result)
            finishing[job_id] = future
        return finishing

    def _run_together(
        self,
        requests: Sequence[GenerationRequest],
        report: Reporter | None,
        cancelled: CancelCheck,
    ) -> dict[str, Finishing]:
        first = requests[0]
        if any(request.batch_key() != first.batch_key() for request in requests):
            raise ValueError("requests in one batch must share their batch key")
        self._check_sampler(first)  # before any work
        mode = MODES[first.mode]

        # 1. Resolve the model (a dedicated inpainting one where configured) and its LoRAs,
        #    before encoding: a LoRA may change the text encoder
        loaded = self._model_for(first)
        self._use_loras(loaded, first.loras)
        # 2. Encode prompts (chunked, weighted; once per distinct prompt in the batch)
        conditioning = self._encode(loaded, requests)
        # 3. Prepare each request's mode inputs (starting picture, canvas, mask) and conditions
        #    (a ControlNet's map, reference embeddings)
        inputs = {request.job_id: mode.prepare(request) for request in requests}
        extras = self._conditions(loaded, mode, requests, inputs)
        # 4. Denoise and decode, in calls of at most MAX_BATCH images of one prompt length
        slots = [(request, index) for request in requests for index in range(request.count)]
        pictures, seconds = self._denoise(loaded, mode, slots, conditioning, inputs, report,
                                          cancelled, extras)
        self._times.images += len(pictures)
        # 5. Finish on the finishing threads: keep the kept pixels, safety check, PNGs
        kept = [request for request in requests if not cancelled(request.job_id)]
        results = [GenerationResult(job_id=request.job_id, model=request.model, images=(),
                                    seconds=seconds[request.job_id], batch_images=len(slots),
                                    prompt_chunks=conditioning[_prompt_key(request)][0].chunks,
                                    control_map=extras.map_png(request.job_id))
                   for request in kept]
        finishing: dict[str, Finishing] = {request.job_id: Future() for request in kept}
        for future in finishing.values():
            self._unfinished.add(future)
            future.add_done_callback(self._unfinished.discard)
        self._finishing(self._finish_batch, loaded, kept, results,
                        [inputs[request.job_id].finish for request in kept],
                        [[pictures[(request.job_id, index)] for index in range(request.count)]
                         for request in kept],
                        [finishing[request.job_id] for request in kept])
        return finishing

    def _finishing(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn` on a finishing thread, or here when there are none (FINISH_THREADS=0)."""
        if self._finishers is None:
            fn(*args)
        else:
            self._finishers.submit(fn, *args)

    def _check_sampler(self, request: GenerationRequest) -> None:
        """Refuse a sampler the request's model does not take (the bot refuses it first)."""
        spec = self.specs.get(request.model)
        if spec is None:
            raise EngineError(f"Unknown model `{request.model}`")
        refusal = sampler_refusal(request.sampler, spec.family)
        if refusal is not None:
            raise EngineError(refusal)

    def _model_for(self, request: GenerationRequest) -> _Loaded:
        """The model that serves `request`: for inpainting, the model's dedicated inpainting
        checkpoint if it has one (SD_INPAINT_MODELS), else the model itself."""
        spec = self.specs.get(request.model)
        if request.mode is Mode.INPAINT and spec is not None and spec.inpaint is not None:
            name = f"{spec.name}{INPAINT_SUFFIX}"
            if name not in self.specs:
                self.specs[name] = replace(spec, name=name, source=spec.inpaint, inpaint=None)
            return self.model(name)
        return self.model(request.model)

    def _conditions(self, loaded: _Loaded, mode: ModeSpec,
                    requests: Sequence[GenerationRequest],
                    inputs: dict[str, Inputs]) -> CallExtras:
        """What a batch's conditions add to its calls: the ControlNet (each job's map joins its
        mode inputs) and the IP-Adapter (attached for a batch with references, taken off for
        one without; each job's reference embeddings)."""
        first = requests[0]
        arch = architecture(loaded.spec)
        extras = CallExtras()
        if loaded.spec.family.arch is not Architecture.SD:
            # The transformer families' adapters take pipelines of their own (the bot refuses
            # such jobs before they are saved)
            if first.control_active or first.reference_active:
                raise EngineError("ControlNets and references work with SD 1.x, 2.x and SDXL "
                                  "models only")
            return extras
        if first.control_active:
            assert first.control is not None
            extras.parts["controlnet"] = self._controls.controlnet(arch, first.control.kind)
            extras.call["controlnet_conditioning_scale"] = first.control.weight
            annotator = self._controls.annotator(first.control.kind)
            for request in requests:
                assert request.control is not None
                picture = control_map(request.control, request.width, request.height, annotator)
                extras.maps[request.job_id] = picture
                job = inputs[request.job_id]
                inputs[request.job_id] = replace(
                    job, pictures={**job.pictures, mode.control_argument: picture})
        self._references.use(loaded.pipe, arch, first.reference_active)
        if first.reference_active:
            assert first.reference is not None
            self._references.set_scale(loaded.pipe, first.reference)
            extras.guided = first.guidance > 1 and \
                loaded.pipe.unet.config.get("time_cond_proj_dim") is None
            for request in requests:
                extras.embeds[request.job_id] = self._references.embeds(
                    loaded.pipe, request, extras.guided)
        return extras

    def _encode(self, loaded: _Loaded, requests: Sequence[GenerationRequest]
                ) -> dict[tuple[str, str], tuple[Conditioning, Conditioning]]:
        """The prompt and negative prompt embeddings of each distinct pair (LoRA tags are not
        text), keyed by `_prompt_key`."""
        import torch

        pipe = loaded.pipe
        device = pipe._execution_device
        family = loaded.spec.family
        encode = PROMPT_ENCODERS[family.arch]
        encoded: dict[tuple[str, str], tuple[Conditioning, Conditioning]] = {}
        with torch.inference_mode():
            for request in requests:
                key = _prompt_key(request)
                if key in encoded:
                    continue
                try:
                    encoded[key] = encode(pipe, family, strip_lora_tags(request.prompt),
                                          request.negative, device)
                except EngineError as error:  # its prompt: the job fails alone
                    raise _JobRefused(request.job_id, error) from error
        return encoded

    def _denoise(
        self,
        loaded: _Loaded,
        mode: ModeSpec,
        slots: list[tuple[GenerationRequest, int]],
        conditioning: dict[tuple[str, str], tuple[Conditioning, Conditioning]],
        inputs: dict[str, Inputs],
        report: Reporter | None,
        cancelled: CancelCheck,
        extras: CallExtras | None = None,
    ) -> tuple[dict[tuple[str, int], Any], dict[str, float]]:
        """Every slot's picture (an H×W×3 array of bytes), by (job id, image index), and each
        job's share of the time.

        Prompts of different lengths (in 75-token chunks, or T5 tokens) cannot share a call. Each
        length runs
        in calls of its own rather than being padded to another job's, which would make a job's
        pictures depend on the jobs it happened to be batched with. A call whose denoising runs
        out of memory is split in halves and tried again; a decode that does is retried alone
        (`_decode`), without denoising again."""
        first = slots[0][0]
        lengths: dict[int, list[tuple[GenerationRequest, int]]] = {}
        for slot in slots:
            embeds = conditioning[_prompt_key(slot[0])][0].embeds
            lengths.setdefault(int(embeds.shape[1]), []).append(slot)
        pending = [group[i:i + self.config.max_batch] for group in lengths.values()
                   for i in range(0, len(group), self.config.max_batch)]
        pictures: dict[tuple[str, int], Any] = {}
        seconds = {request.job_id: 0.0 for request, _ in slots}
        while pending:
            chunk = pending.pop(0)
            live = [slot for slot in chunk if not cancelled(slot[0].job_id)]
            if not live:
                continue
            started = time.perf_counter()
            out_of_memory = False
            try:
                latents = self._call(loaded, live, mode, conditioning, inputs, report, cancelled,
                                     extras)
            except Exception as error:
                if not _is_out_of_memory(error):
                    raise
                out_of_memory = True
            if out_of_memory:
                # Freed here, after the handler: until then its traceback holds the failed
                # call's activations, and the retry would run out of memory again.
                self._free_memory()
                if len(live) == 1:
                    raise EngineError(
                        f"Out of GPU memory for one {first.width}×{first.height} image; "
                        "try a smaller size or fewer steps")
                half = len(live) // 2
                log.warning("out of memory with %d images; retrying as %d + %d",
                            len(live), half, len(live) - half)
                pending[:0] = [live[:half], live[half:]]
                continue
            if latents is None:  # every job of the call was cancelled while it ran
                continue
            made = self._decode(loaded, latents, first.width, first.height)
            del latents
            elapsed = time.perf_counter() - started
            self._times.pipeline += elapsed - self._callback_seconds
            self._callback_seconds = 0.0
            share = elapsed / len(live)
            for (request, index), picture in zip(live, made, strict=True):
                pictures[(request.job_id, index)] = picture
                seconds[request.job_id] += share
        return pictures, seconds

    def _call(
        self,
        loaded: _Loaded,
        slots: list[tuple[GenerationRequest, int]],
        mode: ModeSpec,
        conditioning: dict[tuple[str, str], tuple[Conditioning, Conditioning]],
        inputs: dict[str, Inputs],
        report: Reporter | None,
        cancelled: CancelCheck,
        extras: CallExtras | None = None,
    ) -> Any:
        """One pipeline call for `slots` (request, image index); returns their latents, in
        order (None when the call was interrupted because every job in it was cancelled)."""
        import diffusers
        import torch

        first = slots[0][0]
        extras = extras or CallExtras()
        family = loaded.spec.family
        # 1. The mode's pipeline over the model's weights (and a ControlNet), with a fresh
        #    scheduler for this call
        scheduler = make_scheduler(first.sampler, loaded.pipe.scheduler.config, family)
        pipe = getattr(diffusers, mode.pipeline).from_pipe(loaded.pipe, scheduler=scheduler,
                                                           **extras.parts)
        pipe.set_progress_bar_config(disable=True)
        # 2. Embeddings, one row per image
        kwargs = _embeddings([conditioning[_prompt_key(request)] for request, _ in slots])
        # 3. The mode's inputs (per image) and settings (per call); one generator per image
        for name in inputs[first.job_id].pictures:
            kwargs[name] = [inputs[request.job_id].pictures[name] for request, _ in slots]
        kwargs.update(mode.call(first))
        kwargs.update(extras.arguments(pipe, slots))
        if family.traits.sized_img2img:  # (else it makes pictures of their default size)
            kwargs.setdefault("width", first.width)
            kwargs.setdefault("height", first.height)
        kwargs.update(
            num_inference_steps=first.pipeline_steps,
            guidance_scale=first.guidance,
            generator=[torch.Generator("cpu").manual_seed(request.seeds[index])
                       for request, index in slots],
            output_type="latent",  # decoded by `_decode`, one picture at a time
            callback_on_step_end=self._on_step_end(loaded, slots, report, cancelled),
            callback_on_step_end_tensor_inputs=["latents"],
        )
        # 4. Large pictures (upscales) are encoded in tiles, so the VAE's memory stays bounded
        self._tile_for(pipe.vae, loaded, first.width, first.height)
        # 5. Denoise
        with torch.inference_mode():
            output = pipe(**kwargs)
        if all(cancelled(request.job_id) for request, _ in slots):
            return None
        return output.images

    @staticmethod
    def _tile_for(vae: Any, loaded: _Loaded, width: int, height: int) -> bool:
        """Tile the VAE's work for pictures larger than `TILED_DECODE_AREA` times the model's
        native area; returns whether it does."""
        native = loaded.spec.family.native_side
        tiled = width * height > TILED_DECODE_AREA * native * native
        if tiled:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        return tiled

    def _decode(self, loaded: _Loaded, latents: Any, width: int, height: int) -> list[Any]:
        """Latents → pictures (H×W×3 arrays of bytes), decoded one at a time: the VAE's
        activations at full resolution are the largest tensors of a job, and a batch of 8 of
        them at once is what runs a card out of memory. A VAE that overflows in float16 (SDXL's,
        `force_upcast`) decodes in float32 here, and only here. A picture that still does not
        fit is decoded again in tiles; its latents are kept, so nothing is denoised twice."""
        import torch

        vae = loaded.pipe.vae
        latents = _spatial(loaded, latents, width, height)
        tiled = self._tile_for(vae, loaded, width, height)
        upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        pictures = []
        # (the dtype changes outside inference mode, or the weights would become inference tensors)
        with _decoding_dtype(vae, torch.float32 if upcast else vae.dtype), torch.inference_mode():
            for row in range(latents.shape[0]):
                one = latents[row:row + 1]
                picture = self._decode_one(loaded, vae, one)
                if picture is None and not tiled:
                    log.warning("out of memory decoding one %d×%d picture; decoding it in tiles",
                                width, height)
                    vae.enable_tiling()
                    picture = self._decode_one(loaded, vae, one)
                    vae.disable_tiling()
                if picture is None:
                    raise EngineError(f"Out of GPU memory decoding one {width}×{height} image; "
                                      "try a smaller size")
                pictures.append(picture)
        return pictures

    def _decode_one(self, loaded: _Loaded, vae: Any, latents: Any) -> Any | None:
        """One picture as an H×W×3 array of bytes, as the pipeline's own decode and
        post-processing would make it; None when it ran out of memory."""
        import torch

        out_of_memory = False
        try:
            image = vae.decode(_unscaled(vae, latents.to(vae.dtype)), return_dict=False)[0]
        except Exception as error:
            if not _is_out_of_memory(error):
                raise
            out_of_memory = True
        if out_of_memory:
            self._free_memory()  # after the handler, whose traceback holds the activations
            return None
        watermark = getattr(loaded.pipe, "watermark", None)
        if watermark is not None:  # SDXL's invisible watermark, where it is installed
            image = watermark.apply_watermark(image)
        # diffusers' `VaeImageProcessor.postprocess`, on the device: only bytes cross to the CPU
        image = (image * 0.5 + 0.5).clamp(0, 1).float()
        pixels = (image * 255).round().to(torch.uint8)
        return pixels[0].permute(1, 2, 0).cpu().numpy()

    def _on_step_end(self, loaded: _Loaded, slots: list[tuple[GenerationRequest, int]],
                     report: Reporter | None, cancelled: CancelCheck) -> Callable[..., Any]:
        """Progress (with a preview of each job's first image now and then) and cancellation,
        after every step of a call. Previews are projected here and made into PNGs on a
        finishing thread; each goes out with the first step report after it is ready."""
        job_ids = tuple(dict.fromkeys(request.job_id for request, _ in slots))
        first_slot = {job_id: next(i for i, (request, _) in enumerate(slots)
                                   if request.job_id == job_id) for job_id in job_ids}
        last_preview = [0.0]
        ready: dict[str, bytes] = {}  # filled by a finishing thread

        def encode(pixels: dict[str, Any]) -> None:
            ready.update({job_id: rgb_to_png(rgb) for job_id, rgb in pixels.items()})

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            now = time.perf_counter()
            if all(cancelled(job_id) for job_id in job_ids):
                pipe._interrupt = True
            elif report is not None:
                if (time.monotonic() - last_preview[0] >= PREVIEW_INTERVAL
                        and step + 1 < pipe.num_timesteps):
                    last_preview[0] = time.monotonic()
                    latents = tensors["latents"]
                    width, height = slots[0][0].width, slots[0][0].height
                    self._finishing(encode, {
                        job_id: latents_to_rgb(
                            _spatial(loaded, latents[i:i + 1], width, height)[0], loaded.preview)
                        for job_id, i in first_slot.items()})
                previews = {job_id: ready.pop(job_id) for job_id in list(ready)}
                report(StepReport(job_ids, step + 1, pipe.num_timesteps, previews))
            self._callback_seconds += time.perf_counter() - now
            return tensors

        return on_step_end

    def _finish_batch(self, loaded: _Loaded, requests: list[GenerationRequest],
                      results: list[GenerationResult],
                      finishes: list[Callable[[Image.Image], Image.Image]],
                      pictures: list[list[Any]], futures: list[Finishing]) -> None:
        """On a finishing thread: each job's pictures as the mode finishes them, the safety
        checker once for the whole batch, then each job's PNGs (a task of its own, so that
        several encode at once)."""
        try:
            made = [[finish(Image.fromarray(array)) for array in arrays]
                    for finish, arrays in zip(finishes, pictures, strict=True)]
            flags = iter(self._safety_flags(loaded, [p for job in made for p in job]))
            verdicts = [[next(flags) for _ in job] for job in made]
        except Exception:
            log.exception("finishing a batch of %d jobs failed", len(requests))
            for future in futures:
                future.set_exception(EngineError("The image pipeline failed on this job"))
            return
        for job in zip(requests, results, made, verdicts, futures, strict=True):
            self._finishing(self._encode_job, *job)

    def _encode_job(self, request: GenerationRequest, result: GenerationResult,
                    pictures: list[Image.Image], nsfw: list[bool], future: Finishing) -> None:
        try:
            images = tuple(self._finish(request, index, picture, flag)
                           for index, (picture, flag) in enumerate(zip(pictures, nsfw,
                                                                       strict=True)))
        except Exception:
            log.exception("encoding the pictures of job %s failed", request.job_id)
            future.set_exception(EngineError("The image pipeline failed on this job"))
            return
        future.set_result(replace(result, images=images))

    def _finish(self, request: GenerationRequest, index: int, picture: Any,
                nsfw: bool) -> GeneratedImage:
        seed = request.seeds[index]
        spec = self.specs.get(request.model)
        parameters = a1111_parameters(
            prompt=request.prompt,
            negative=request.negative,
            steps=request.steps,
            sampler=sampler(request.sampler, spec.family if spec else None).label,
            guidance=request.guidance,
            seed=seed,
            width=picture.width,
            height=picture.height,
            model=request.model,
            strength=request.strength,
            extra=_extra_parameters(request),
        )
        return GeneratedImage(
            seed=seed,
            png=encode_png(picture, parameters),
            width=picture.width,
            height=picture.height,
            nsfw=nsfw,
        )

    def _safety_flags(self, loaded: _Loaded, pictures: Sequence[Any]) -> list[bool]:
        """The safety checker's verdict on each picture, in one call for all of them."""
        if loaded.safety is None or not pictures:
            return [False] * len(pictures)
        import numpy as np
        import torch

        checker, extractor = loaded.safety
        clip_input = extractor(list(pictures), return_tensors="pt").pixel_values
        array = np.stack([np.asarray(picture, dtype=np.float32) for picture in pictures]) / 255.0
        with torch.inference_mode():
            _, flags = checker(images=array,
                               clip_input=clip_input.to(self.device, checker.dtype))
        return [bool(flag) for flag in flags]


@contextlib.contextmanager
def _peft_quiet() -> Iterator[None]:
    """peft warns about what the worker means to do: several adapters in one model, dropping
    the active one (the next call sets the adapters it needs anyway)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        yield


@contextlib.contextmanager
def _decoding_dtype(vae: Any, dtype: Any) -> Iterator[None]:
    """The VAE in `dtype` for a while (float32, to decode with a VAE that overflows in float16),
    then back in its own."""
    own = vae.dtype
    if dtype == own:
        yield
        return
    vae.to(dtype)
    try:
        yield
    finally:
        vae.to(own)


def _spatial(loaded: _Loaded, latents: Any, width: int, height: int) -> Any:
    """Latents as the VAE reads them (B×C×H/8×W/8): FLUX.1 holds them packed, 2×2 patches to a
    row of its sequence."""
    if not loaded.spec.family.traits.packed_latents:
        return latents
    pipe = loaded.pipe
    return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)


def _unscaled(vae: Any, latents: Any) -> Any:
    """Latents as the VAE decodes them: SDXL-style VAEs that publish their latents' mean and
    spread are given them back, the others are divided by their scaling factor (and moved back
    by their shift, as FLUX's and SD 3's are)."""
    config = vae.config
    mean, spread = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and spread is not None:
        import torch

        shape = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
        spread_t = torch.tensor(spread).view(shape).to(latents.device, latents.dtype)
        return latents * spread_t / config.scaling_factor + mean_t
    return latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)


@dataclass
class CallExtras:
    """What a batch's conditions add to its pipeline calls (`Worker._conditions`)."""

    parts: dict[str, Any] = field(default_factory=dict)  # for `from_pipe`: the ControlNet
    call: dict[str, Any] = field(default_factory=dict)  # arguments shared by the call
    maps: dict[str, Image.Image] = field(default_factory=dict)  # each job's control map
    embeds: dict[str, Any] = field(default_factory=dict)  # each job's reference embeddings
    guided: bool = True  # reference rows hold a negative row too (classifier-free guidance)

    def arguments(self, pipe: Any,
                  slots: Sequence[tuple[GenerationRequest, int]]) -> dict[str, Any]:
        """The call's arguments for `pipe` (made for this call) and its images."""
        arguments = dict(self.call)
        if self.embeds:
            arguments.update(give_embeds(
                pipe, [self.embeds[request.job_id] for request, _ in slots], self.guided))
        return arguments

    def map_png(self, job_id: str) -> bytes | None:
        picture = self.maps.get(job_id)
        return None if picture is None else encode_png(picture, None)


def _extra_parameters(request: GenerationRequest) -> tuple[tuple[str, str], ...]:
    """The PNG `parameters` fields beyond the usual ones, in AUTOMATIC1111's words where it
    has them: how far an inpainted area fades into the kept picture, the ControlNet and the
    IP-Adapter (as its ControlNet extension writes them)."""
    extra: list[tuple[str, str]] = []
    if request.mode is Mode.INPAINT:
        extra.append(("Mask blur", str(canvas.KEPT_BEYOND)))
    if request.control is not None and request.control_active:
        extra.append(("ControlNet 0", f'"Module: {request.control.kind}, '
                                      f'Weight: {request.control.weight:g}"'))
    if request.reference is not None and request.reference_active:
        reference = request.reference
        style = "" if reference.style is None else f", Style weight: {reference.style:g}"
        extra.append(("IP-Adapter", f'"Pictures: {len(reference.pictures)}, '
                                    f'Weight: {reference.weight:g}{style}"'))
    return tuple(extra)


def _failed(error: BaseException) -> Finishing:
    future: Finishing = Future()
    future.set_exception(error)
    return future


def _outcome(finishing: Finishing) -> Outcome:
    """A finished job's result, or its exception."""
    error = finishing.exception()
    return finishing.result() if error is None else error


def _bare(error: EngineError) -> EngineError:
    """`error` without the frames it was raised through: a job's error is kept until its job
    is settled, and those frames hold the batch's tensors."""
    error.__traceback__ = None
    return error


def _embeddings(pairs: list[tuple[Conditioning, Conditioning]]) -> dict[str, Any]:
    """The pipeline's embedding arguments for a call, one row per image: the prompts', the
    negative prompts' where the family has them (FLUX.1 does not), and the pooled ones where
    the model uses them (SDXL, FLUX.1, SD 3.5: every request of the call has them)."""
    import torch

    positive, negative = pairs[0]
    kwargs: dict[str, Any] = {"prompt_embeds": torch.cat([p.embeds for p, _ in pairs])}
    if positive.pooled is not None:
        kwargs["pooled_prompt_embeds"] = torch.cat([p.pooled for p, _ in pairs
                                                    if p.pooled is not None])
    if negative.embeds is not None:
        kwargs["negative_prompt_embeds"] = torch.cat([n.embeds for _, n in pairs])
        if negative.pooled is not None:
            kwargs["negative_pooled_prompt_embeds"] = torch.cat([n.pooled for _, n in pairs
                                                                 if n.pooled is not None])
    return kwargs


def _prompt_key(request: GenerationRequest) -> tuple[str, str]:
    return request.prompt, request.negative


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
