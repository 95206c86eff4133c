"""Headless Chromium (Debian's chromium and chromium-driver) driven by selenium, against the app
served by uvicorn on a loopback port. Screenshots of each page go to CONSOLE_SCREENSHOTS (the
committed ones in docs/console/ are made with CONSOLE_SCREENSHOTS=docs/console), else to a
temporary folder: every run takes them, so a page that cannot be drawn fails the test."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=ru-RU",
)


class Browser:
    def __init__(self, base: str, downloads: Path, profile: Path, shots: Path):
        if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
            raise RuntimeError(
                "the browser tests need Debian's chromium and chromium-driver:"
                " apt-get install -y chromium chromium-driver (.ci/run installs them)"
            )
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(30)
        self.base = base
        self.downloads = downloads
        self.shots = shots

    def quit(self) -> None:
        self.driver.quit()

    # --- navigation --------------------------------------------------------------------------------

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text.replace("\u00a0", " ")

    def type(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def click(self, css: str) -> None:
        self.find(css).click()

    def wait(self, predicate: Callable[[], bool], timeout: float = 10, what: str = "the page") -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except WebDriverException as exc:  # not there yet
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} ({last})\n{self.driver.page_source[:3000]}")

    def wait_for(self, css: str, timeout: float = 10) -> WebElement:
        self.wait(lambda: bool(self.all(css)), timeout, css)
        return self.find(css)

    def sign_in(self, email: str, password: str) -> None:
        self.driver.delete_all_cookies()
        self.open("/console/login")
        self.type("#email", email)
        self.type("#password", password)
        self.click("#sign-in")
        self.wait(
            lambda: "/console/login" not in self.driver.current_url, what="the first page after sign-in"
        )

    # --- screenshots -------------------------------------------------------------------------------

    def _capture(self, path: Path, width: int, height: int, mobile: bool) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        time.sleep(0.3)  # relayout, and the chart's resize
        full = self.driver.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)"
        )
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(int(full), 4000), "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))

    def screenshot(self, name: str) -> list[Path]:
        """The page at desktop and at phone width, each as tall as the page."""
        self.shots.mkdir(parents=True, exist_ok=True)
        paths = [self.shots / f"{name}-desktop.png", self.shots / f"{name}-phone.png"]
        try:
            self._capture(paths[0], *DESKTOP, mobile=False)
            self._capture(paths[1], *PHONE, mobile=True)
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        for path in paths:
            assert path.stat().st_size > 5000, f"{path} looks empty"
        return paths

    def downloaded(self, name: str, timeout: float = 15) -> bytes:
        target = self.downloads / name
        self.wait(
            lambda: target.exists() and not target.with_suffix(target.suffix + ".crdownload").exists(),
            timeout,
            f"the download of {name}",
        )
        return target.read_bytes()


def new_browser(base: str, shots: Path | None = None) -> tuple[Browser, Path]:
    work = Path(tempfile.mkdtemp(prefix="console-browser-"))
    (work / "downloads").mkdir()
    target = shots or Path(os.environ.get("CONSOLE_SCREENSHOTS") or work / "shots")
    return Browser(base, work / "downloads", work / "profile", target), work


def remove(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
