"""The built site works in a real browser, offline: headless Chromium over a localhost server.

Checks that the home page renders (title and heading in the DOM), that the search box finds the
`wrap` API entry (mkdocs-material's search runs in a web worker over `search_index.json`), and
that every resource the pages load comes from the local server. Screenshots of the home page and
of the search results are saved to `artifacts/` as test artifacts.

Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them) and the
`selenium` package (the `dev` extra); skipped with the reason when any is missing.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import shutil
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from test_docs import ROOT, site  # noqa: F401  (the strict build, shared fixture)
from environment import skip_or_fail

ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
TIMEOUT_S = 30


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def server(site):  # noqa: F811
    """The built site on http://127.0.0.1:<free port>/, served from a thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven by selenium through the system chromedriver."""
    if importlib.util.find_spec("selenium") is None:
        skip_or_fail('selenium is not installed; install it with: pip install -e ".[dev]"')
    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        skip_or_fail(
            "headless Chromium is not available (need `chromium` and `chromedriver` on PATH); "
            "install them with: apt-get install -y chromium chromium-driver  (.ci/run does this)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition):
    """Poll ``condition`` until it is truthy. Search results re-render while the worker answers, so an
    element read mid-update is stale: that counts as "not yet", like a missing element."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, TIMEOUT_S, ignored_exceptions=ignored).until(condition)


def _local_only(driver, origin: str) -> list[str]:
    """URLs of every resource the current page loaded that did not come from `origin`."""
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [u for u in urls if not (u.startswith(origin) or u.startswith("data:") or u.startswith("blob:"))]


def test_home_page_renders(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server)
    heading = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "article h1"))
    assert heading.text.strip().startswith("tokenprune")
    assert "tokenprune" in browser.title
    # The pyramid figure is an inline SVG with its four stages.
    assert len(browser.find_elements(By.CSS_SELECTOR, "article figure svg rect")) == 4
    assert browser.execute_script("return document.fonts.status") == "loaded"
    assert _local_only(browser, server) == []
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "docs_home.png"))
    assert (ARTIFACTS / "docs_home.png").stat().st_size > 10_000


def test_search_finds_the_wrap_api_entry(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server + "quickstart/")
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "article h1"))
    box = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input.md-search__input"))
    _wait(browser, lambda d: box.is_displayed())  # in the header at desktop width
    box.click()
    box.send_keys("wrap")

    def wrap_entry(driver):
        links = driver.find_elements(By.CSS_SELECTOR, ".md-search-result a")
        hrefs = [urllib.parse.urlsplit(a.get_attribute("href") or "") for a in links]
        return [h for h in hrefs if h.path == "/reference/tokenprune/" and h.fragment == "tokenprune.wrap"]

    found = _wait(browser, wrap_entry)
    assert found[0].geturl().startswith(server)
    assert _local_only(browser, server) == []
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "docs_search.png"))

    browser.get(found[0].geturl())  # the result leads to the rendered API entry (it may sit in a collapsed group)
    entry = _wait(browser, lambda d: d.find_element(By.ID, "tokenprune.wrap"))
    assert "wrap" in entry.text


def test_site_is_served_from_the_build(server, site):  # noqa: F811
    with urllib.request.urlopen(server + "search/search_index.json", timeout=10) as response:
        assert response.status == 200
        assert b'"location"' in response.read(2000)
    assert Path(site, "index.html").is_file()
