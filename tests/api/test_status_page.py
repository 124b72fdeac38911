"""The status page at GET /: content negotiation, and the page itself in a real headless Chromium
(Debian's chromium + chromedriver, driven by Selenium): it loads, shows the model, and its plots move
after requests. The screenshot it takes is docs/status-page.png (VELOLLM_SCREENSHOT=PATH writes it)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.ollama_upstream import fake_ollama
from tests.serve_process import start_serve, stop_serve
from tests.system_binaries import require_binary
from velollm.api.status_page import wants_html

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--window-size=1400,1000",
                  "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fake_ollama() as upstream:
        proc, url, _log, _ = start_serve(tmp_path_factory.mktemp("status"), "--upstream", upstream)
        try:
            yield url
        finally:
            stop_serve(proc)


def test_accept_header_decides():
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
    assert wants_html(browser) and wants_html("TEXT/HTML")
    assert not wants_html("") and not wants_html("*/*") and not wants_html("application/json")
    assert not wants_html("text/html;q=0, */*")


def test_ollama_clients_still_see_ollama_is_running(live):
    for accept in (None, "*/*", "application/json"):
        response = httpx.get(f"{live}/", headers={"Accept": accept} if accept else {})
        assert response.status_code == 200 and response.text == "Ollama is running"
    assert httpx.head(f"{live}/").status_code == 200
    page = httpx.get(f"{live}/", headers={"Accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html") and '<script src="/status.js">' in page.text
    script = httpx.get(f"{live}/status.js")
    assert script.status_code == 200 and "parseMetrics" in script.text
    upstream = httpx.get(f"{live}/status/upstream").json()["upstream"]
    assert upstream["up"] and upstream["kind"] == "ollama" and upstream["models"] == 1


def _chromium():
    require_binary("chromium")
    driver_path = require_binary("chromedriver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def _wait(driver, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}\npage: {driver.find_element('tag name', 'body').text}")


def test_page_in_a_real_browser(live, tmp_path):
    driver = _chromium()
    try:
        driver.get(f"{live}/")
        assert driver.title == "VeloLLM status"
        _wait(driver, "return +document.body.dataset.ticks >= 2")
        row = _wait(driver, "return document.querySelector('#models tr[data-model=demo]')?.innerText")
        assert "demo" in row and "CPU" in row
        assert driver.execute_script("return document.getElementById('health').textContent") == "ok"
        assert _wait(driver, "return document.getElementById('upstream').dataset.state") == "up"
        assert float(driver.execute_script("return document.getElementById('plot-tps').dataset.max")) == 0
        before = driver.execute_script("return document.getElementById('plot-tps').toDataURL()")
        with httpx.Client(base_url=live, timeout=120) as client:
            for i in range(6):  # spread over a few samples, so the plots draw a curve
                r = client.post("/api/generate", json={"model": "demo", "prompt": f"hello {i} " * (i + 1),
                                                       "stream": False, "options": {"num_predict": 16 * (i + 1)}})
                assert r.status_code == 200, r.text
                time.sleep(1.0)
        # the tokens/s plot rises, a TTFT point appears, and the canvas is redrawn with them
        _wait(driver, "return +document.getElementById('plot-tps').dataset.max > 0")
        _wait(driver, "return +document.getElementById('plot-ttft').dataset.samples >= 1")
        assert driver.execute_script("return document.getElementById('plot-tps').toDataURL()") != before
        requests = int(driver.execute_script("return document.getElementById('stat-requests').textContent"))
        assert requests >= 6
        caches = driver.execute_script("return document.getElementById('caches').innerText")
        assert "prefix" in caches
        time.sleep(2.5)  # one more sample, so the screenshot shows the curve falling back
        shot = tmp_path / "status-page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("VELOLLM_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["VELOLLM_SCREENSHOT"])
    finally:
        driver.quit()
