"""Progress of loading a model: a line in the log every few percent, and a state the bot shows
(`/info`, queued placeholders: "loading model (42 %)").

A first start on a GPU machine downloads several GB (SD 1.5 about 4, SDXL about 7) with the
libraries' progress bars off, and looked hung for minutes. diffusers gives no progress callback,
so while a model loads (`reporting`) two of its library hooks are pointed at a `LoadProgress`:

- huggingface_hub's `snapshot_download` takes a `tqdm_class` for its byte counts (a documented
  parameter), which diffusers does not pass: the call diffusers makes gets one, after a dry run
  of the same call that says how many bytes will come (the counts' own total only grows as each
  file starts);
- diffusers counts the components it loads through `diffusers.utils.logging.tqdm`.

The download is the first 90 % of the way, loading the components from disk the rest."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LOG_EVERY = 5  # percent between log lines
DOWNLOAD_SHARE = 90  # percent of the way that the download stands for


@dataclass(frozen=True)
class Loading:
    """Where the loading of `model` stands."""

    model: str
    percent: int
    stage: str = "loading"  # or "compiling": a compiled model's warm-up after the load

    @property
    def text(self) -> str:
        return f"{self.stage} model ({self.percent} %)"


class LoadProgress:
    """Turns byte and component counts into percentages: a log line every `LOG_EVERY` percent,
    and `report` whenever the whole percentage changes. Thread-safe (the hub downloads files on
    several threads)."""

    def __init__(self, model: str, report: Callable[[Loading], None]) -> None:
        self.model = model
        self._report = report
        self._lock = threading.Lock()
        self._bars: list[Any] = []  # the hub's byte counts
        self._downloading = False
        self._components = (0, 0)  # loaded, of
        self._expected = 0  # bytes the download will bring, where a dry run said
        self._percent = -1
        self._logged = -LOG_EVERY
        self._started = time.perf_counter()

    def bar_class(self) -> type[Any]:
        """A tqdm class for `snapshot_download(tqdm_class=…)` that counts into this progress."""
        from tqdm import tqdm

        progress = self

        class Bar(tqdm):
            monitor_interval = 0  # no monitoring thread: nothing is drawn

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)
                kwargs["disable"] = False
                kwargs["file"] = _Discard()
                super().__init__(*args, **kwargs)
                progress._add(self)

            def update(self, n: float | None = 1) -> bool | None:
                shown = super().update(n)
                progress._changed()
                return shown

            def refresh(self, *args: Any, **kwargs: Any) -> None:
                progress._changed()  # a total that grows as the files start

        return Bar

    def expect(self, size: int) -> None:
        with self._lock:
            self._expected = size

    def components(self, iterable: Iterable[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Stands in for diffusers' `logging.tqdm` over the components it loads."""
        items = list(iterable)
        with self._lock:
            self._components = (0, len(items))
        self._changed()
        for index, item in enumerate(items):
            yield item
            with self._lock:
                self._components = (index + 1, len(items))
            self._changed()

    def _add(self, bar: Any) -> None:
        with self._lock:
            if bar.unit == "B":  # the hub's byte counts; its count of files is another bar
                self._bars.append(bar)
                self._downloading = True

    def _changed(self) -> None:
        with self._lock:
            done, total = self._downloaded()
            loaded, components = self._components
            if components:
                share = DOWNLOAD_SHARE if self._downloading else 0
                percent = share + (100 - share) * loaded // components
            elif total:
                percent = min(DOWNLOAD_SHARE - 1, DOWNLOAD_SHARE * done // total)
            else:
                return
            if percent <= self._percent:  # the byte total grows as files start: never back
                return
            self._percent = percent
            line = percent >= self._logged + LOG_EVERY or percent == 100
            if line:
                self._logged = percent
        if line:
            if components:
                log.info("loading model %s: %d %% (%d of %d components)", self.model, percent,
                         loaded, components)
            else:
                log.info("downloading model %s: %d %% (%.2f of %.2f GB, %.0f s)", self.model,
                         percent, done / 1e9, total / 1e9, time.perf_counter() - self._started)
        self._report(Loading(self.model, percent))

    def _downloaded(self) -> tuple[int, int]:
        """Bytes so far and in all, of the byte bar furthest along (the hub keeps one for bytes
        received and one for bytes written)."""
        done = max((int(bar.n) for bar in self._bars), default=0)
        total = max([int(bar.total or 0) for bar in self._bars] + [self._expected])
        return min(done, total), total


class _Discard:
    """A file that swallows what a bar would draw."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def reporting(progress: LoadProgress) -> Iterator[None]:
    """Count a model's download and loading into `progress` (see the module). The engine loads
    one model at a time, on its own thread; the hooks are put back afterwards."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.utils.logging as diffusers_logging

    download = pipeline_utils.snapshot_download
    components = diffusers_logging.tqdm

    def with_progress(*args: Any, **kwargs: Any) -> Any:
        try:
            planned = download(*args, **kwargs, dry_run=True)
            progress.expect(sum(file.file_size or 0 for file in planned if file.will_download))
        except Exception as error:  # offline, or not found: the real call says so
            log.debug("no dry run of the download: %s", error)
        return download(*args, **kwargs, tqdm_class=progress.bar_class())

    pipeline_utils.snapshot_download = with_progress
    diffusers_logging.tqdm = progress.components  # type: ignore[assignment]
    try:
        yield
    finally:
        pipeline_utils.snapshot_download = download
        diffusers_logging.tqdm = components
