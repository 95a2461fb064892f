"""The HTTP server as a real uvicorn process on a free local port, and the draw-a-digit page in
a real headless Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from mnist_lab.loadtest import free_port, running_server
from tests.helpers import render_photo, run_module

pytestmark = pytest.mark.slow  # a real server process, a browser, a load test


@pytest.fixture(scope="module")
def server(good_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("serve_run")
    with running_server(str(good_run), free_port(), f"hydra.run.dir={run_dir}") as url:
        yield url


@pytest.fixture(scope="module")
def digits(datamodule):
    images, labels = datamodule.tensors["test"]
    return images[:32].numpy(), labels[:32].tolist()


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_health_names_the_model(server):
    body = httpx.get(f"{server}/health").json()
    assert body["status"] == "ok" and "CNN" in body["model"]


def test_predict_upload_and_json_agree_with_the_labels(server, digits):
    images, labels = digits
    rng = np.random.default_rng(3)
    right_json = right_file = 0
    for image, label in zip(images[:16], labels[:16], strict=True):
        r = httpx.post(f"{server}/predict", json={"pixels": image.tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"digit", "probabilities"} and len(body["probabilities"]) == 10
        assert abs(sum(body["probabilities"]) - 1) < 1e-3
        right_json += body["digit"] == label
        photo = render_photo(image, rng)
        r = httpx.post(f"{server}/predict", files={"file": ("photo.jpg", photo, "image/jpeg")})
        assert r.status_code == 200, r.text
        right_file += r.json()["digit"] == label
    assert right_json >= 15 and right_file >= 15


def test_concurrent_requests_are_all_answered_correctly(server, digits):
    """32 requests at once (batched together by the server) get the same answers as one by one."""
    images, _ = digits
    one_by_one = [
        httpx.post(f"{server}/predict", json={"pixels": im.tolist()}).json() for im in images
    ]
    with ThreadPoolExecutor(32) as pool:
        together = list(
            pool.map(
                lambda im: httpx.post(f"{server}/predict", json={"pixels": im.tolist()}).json(),
                images,
            )
        )
    assert [r["digit"] for r in together] == [r["digit"] for r in one_by_one]
    for a, b in zip(together, one_by_one, strict=True):
        assert np.allclose(a["probabilities"], b["probabilities"], atol=1e-4)


def test_returned_input_is_the_preprocessed_28x28_image(server, digits):
    images, _ = digits
    r = httpx.post(f"{server}/predict?return_input=true", files={"file": png_bytes(images[0])})
    seen = np.array(r.json()["input"])
    assert seen.shape == (28, 28) and seen.max() == 255 and seen[0].max() == 0


BOMB = io.BytesIO()
Image.new("1", (10_000, 10_000)).save(BOMB, format="PNG")
TRUNCATED = io.BytesIO()
Image.new("L", (200, 200), 128).save(TRUNCATED, format="JPEG")

BAD_REQUESTS = {
    "not an image": ({"files": {"file": ("x.png", b"hello", "image/png")}}, 400, "image format"),
    "empty file": ({"files": {"file": ("x.png", b"", "image/png")}}, 400, "empty"),
    "truncated jpeg": (
        {"files": {"file": ("x.jpg", TRUNCATED.getvalue()[:300], "image/jpeg")}},
        400,
        "not a readable image",
    ),
    "blank page": (
        {"files": {"file": ("x.png", png_bytes(np.full((50, 50), 255, np.uint8)))}},
        400,
        "no digit found",
    ),
    "over 5 MB": ({"files": {"file": ("x.png", b"\0" * (6 * 2**20))}}, 413, "5 MB limit"),
    "decompression bomb": (
        {"files": {"file": ("b.png", BOMB.getvalue())}},
        413,
        "bomb|pixel limit",
    ),
    "wrong field": ({"files": {"image": ("x.png", b"hello")}}, 400, "field named 'file'"),
    "pixels wrong shape": ({"json": {"pixels": [[0] * 28] * 27}}, 400, "28x28"),
    "pixels not numbers": ({"json": {"pixels": [["a"] * 28] * 28}}, 400, "28x28 array"),
    "pixels out of range": ({"json": {"pixels": [[999] * 28] * 28}}, 400, "between 0 and 255"),
    "json without pixels": ({"json": {"image": []}}, 400, '"pixels"'),
    "json not an object": ({"json": [1, 2, 3]}, 400, '"pixels"'),
    "broken json": (
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    "plain text": (
        {"content": b"7", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported content type",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(server, digits, case):
    kwargs, status, message = BAD_REQUESTS[case]
    r = httpx.post(f"{server}/predict", timeout=60, **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    assert re.search(message, r.json()["detail"]), r.json()
    images, labels = digits
    ok = httpx.post(f"{server}/predict", json={"pixels": images[0].tolist()})
    assert ok.status_code == 200 and ok.json()["digit"] == labels[0]


def test_serves_an_exported_onnx_model(onnx_export, digits, tmp_path):
    out, _ = onnx_export
    images, labels = digits
    with running_server(str(out), free_port(), f"hydra.run.dir={tmp_path}") as url:
        assert httpx.get(f"{url}/health").json()["model"] == out.name
        answers = [
            httpx.post(f"{url}/predict", files={"file": png_bytes(im)}).json()["digit"]
            for im in images[:16]
        ]
    assert sum(a == b for a, b in zip(answers, labels[:16], strict=True)) >= 15


def test_page_in_a_real_browser_predicts_a_drawn_digit(server):
    """Acceptance: headless Chromium opens /, a digit is drawn on the canvas with mouse events,
    and the page shows the predicted digit with 10 probability bars."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "Debian's chromium and chromium-driver are needed: run `make browser`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",  # this machine has no internet: no phoning home
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        browser.get(f"{server}/")
        pad = browser.find_element(By.ID, "pad")
        digit = browser.find_element(By.ID, "digit")

        def draw(points: list[tuple[int, int]]) -> str:
            browser.find_element(By.ID, "clear").click()
            assert digit.text == ""
            strokes = ActionChains(browser, duration=10)
            strokes.move_to_element_with_offset(pad, *points[0]).click_and_hold()
            for point in points[1:]:
                strokes.move_to_element_with_offset(pad, *point)
            strokes.release().perform()
            WebDriverWait(browser, 20).until(lambda _: digit.text != "")
            # the last answer belongs to the whole drawing once no request is in flight
            WebDriverWait(browser, 20).until(
                lambda b: b.execute_script("return !pending && !again")
            )
            return digit.text

        # offsets from the centre of the 280x280 canvas
        seven = [(x, -80) for x in range(-60, 61, 10)] + [
            (60 - 5 * i, -80 + 10 * i) for i in range(1, 17)
        ]
        assert draw(seven) == "7"
        one = [(0, y) for y in range(-90, 91, 10)]
        assert draw(one) == "1"
        circle = [
            (int(55 * np.sin(t)), int(-85 * np.cos(t))) for t in np.linspace(0, 2 * np.pi, 40)
        ]
        assert draw(circle) == "0"
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar .p")
        assert len(bars) == 10
        shown = [float(b.text.rstrip("%")) for b in bars]
        assert shown[0] == max(shown) and abs(sum(shown) - 100) < 1.0
        assert browser.find_element(By.ID, "status").text == ""
    finally:
        browser.quit()


def test_load_test_command_reports_throughput_and_latency(server, tmp_path):
    """The machinery behind docs/serving.md (the targets live there, not here)."""
    out = tmp_path / "load.json"
    proc = run_module(
        "mnist_lab.loadtest", "--url", server, "--seconds", "1", "--concurrency", "4",
        "--out", str(out),
    )  # fmt: skip
    result = json.loads(out.read_text())
    for form in ("json", "file"):
        r = result[form]
        assert r["errors"] == 0 and r["requests"] > 10
        assert r["requests_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert "req/s" in proc.stdout
    assert result["machine"]["isa"] and "native_bf16" in result["machine"]  # which machine class
