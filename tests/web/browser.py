"""Debian's headless Chromium, driven with Selenium through the matching `chromedriver` (never a
downloaded browser or driver). Selenium blocks: run what drives it in a thread (`asyncio.to_thread`)
so the bot under test keeps serving on the event loop."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver",)
# Flags that work in a container: no sandbox, GPU, QUIC, first-run or background traffic.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-color-profile=srgb")
DESKTOP = (1366, 900)
PHONE = (390, 844)  # an iPhone's CSS pixels
WAIT = 20.0  # seconds for a page or a download


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip() -> tuple[str, str]:
    """Paths of the browser and its driver; skips the test where either is missing."""
    browser, driver = _which(CHROMIUM_NAMES), _which(DRIVER_NAMES)
    if browser is None or driver is None:
        pytest.skip("browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("browser tests need selenium (pip install -e '.[test]')")
    return browser, driver


class Browser:
    """One Chromium window with its own profile and download folder."""

    def __init__(self, base_url: str, folder: Path, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = chromium_or_skip()
        self.base_url = base_url
        self.downloads = folder / "downloads"
        self.downloads.mkdir(parents=True)
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={folder / 'profile'}")
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
        options.add_experimental_option("prefs", {
            "download.default_directory": str(self.downloads),
            "download.prompt_for_download": False,
        })
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        self.driver.set_page_load_timeout(WAIT)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(self.downloads)})

    def close(self) -> None:
        self.driver.quit()

    def go(self, path: str) -> None:
        self.driver.get(path if path.startswith("http") else self.base_url + path)

    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        return url[len(self.base_url):] if url.startswith(self.base_url) else url

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def until(self, condition: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                value = condition()
            except Exception:  # not there yet (no such element, stale element)
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"waited {WAIT:.0f} s for {what}; at {self.driver.current_url}")
            time.sleep(0.1)

    def images_loaded(self) -> bool:
        """Whether every picture on the page has arrived and decoded."""
        return bool(self.driver.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))

    def downloaded(self, name: str) -> bytes:
        """The bytes of a finished download."""
        target = self.downloads / name
        self.until(lambda: target.exists() and not any(
            p.suffix == ".crdownload" for p in self.downloads.iterdir()), f"download {name}")
        return target.read_bytes()

    @contextmanager
    def phone(self) -> Iterator[None]:
        """A phone's width and pixel density, for as long as the block lasts."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 2, "mobile": True})
        try:
            yield
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def screenshot(self, name: str) -> Path:
        """The viewport as a PNG in the shots folder (and in `$GALLERY_SCREENSHOTS`, if set,
        to look at after the run)."""
        self.until(self.images_loaded, "the page's pictures")
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        keep = os.environ.get("GALLERY_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path
