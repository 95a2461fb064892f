"""The HTTP server as a real uvicorn process on a free local port, and the draw-a-digit page in
a real headless Chromium."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from tests.helpers import render_photo, run_module, running_server

pytestmark = pytest.mark.slow  # a real server process, a browser, a load test


@pytest.fixture(scope="module")
def server(good_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("serve_run")
    with running_server(str(good_run), f"hydra.run.dir={run_dir}") as url:
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
    "pixels booleans": ({"json": {"pixels": [[True] * 28] * 28}}, 400, "not true/false"),
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
    with running_server(str(out), f"hydra.run.dir={tmp_path}") as url:
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
    for form in ("json", "file", "v2"):  # v2: the Open Inference Protocol's JSON tensors
        r = result[form]
        assert r["errors"] == 0 and r["requests"] > 10
        assert r["requests_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        # where the CPU went: the server's (from its /health) and the load generator's own
        assert r["server_cpu_ms_per_request"] > 0 and r["client_cpu_ms_per_request"] > 0
    assert "req/s" in proc.stdout and "CPU per request: server" in proc.stdout
    assert result["server_rss_mb"] > 0 and result["mean_batch"] >= 1
    assert result["machine"]["isa"] and "native_bf16" in result["machine"]  # which machine class


# --- the ONNX server under attack ----------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_server(onnx_export, tmp_path_factory):
    """``serve`` on the exported .onnx file, as a real process whose imports are logged
    (``PYTHONPROFILEIMPORTTIME``: what ``python -X importtime`` prints, one line per module)."""
    model, _ = onnx_export
    run_dir = tmp_path_factory.mktemp("onnx_serve")
    log, env = run_dir / "imports.log", os.environ | {"PYTHONPROFILEIMPORTTIME": "1"}
    with running_server(str(model), f"hydra.run.dir={run_dir}", cold=True, env=env, log=log) as url:
        yield url, log


def test_onnx_server_imports_neither_torch_nor_lightning(onnx_server):
    url, log = onnx_server
    imported = {line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines()}
    assert {
        "onnxruntime",
        "fastapi",
        "mnist_lab.serving.predictor",
    } <= imported  # the log is complete
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "lightning", "torchvision"))
    assert not heavy, heavy[:10]
    health = httpx.get(f"{url}/health").json()
    assert health["model"].endswith(".onnx") and health["rss_mb"] < 300


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels in its header, with no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def _malformed(kind: str, rng: np.random.Generator) -> dict:
    """One malformed request of ``kind`` (httpx.post keyword arguments), randomised."""
    as_json = {"headers": {"content-type": "application/json"}}
    grid = rng.integers(0, 256, (28, 28)).tolist()
    if kind == "random bytes":
        return {"files": {"file": ("x.png", rng.bytes(int(rng.integers(1, 5000))))}}
    if kind == "truncated png":
        data = png_bytes(rng.integers(0, 256, (28, 28), dtype=np.uint8))
        return {"files": {"file": ("x.png", data[: int(rng.integers(8, len(data) - 1))])}}
    if kind == "png claiming 50000x50000":
        return {"files": {"file": ("x.png", _png_header(50_000, 50_000))}}
    if kind == "6 MB upload":
        return {"files": {"file": ("x.png", b"\x89PNG" + b"\0" * (6 * 2**20))}}
    if kind == "empty file":
        return {"files": {"file": ("x.png", b"")}}
    if kind == "blank page":
        side = int(rng.integers(10, 200))
        return {"files": {"file": ("x.png", png_bytes(np.full((side, side), 255, np.uint8)))}}
    if kind == "wrong form field":
        return {"files": {"image": ("x.png", png_bytes(np.zeros((28, 28), np.uint8)))}}
    if kind == "not json":
        return {"content": rng.bytes(int(rng.integers(1, 300))), **as_json}
    if kind == "wrong shape":
        rows, cols = (int(v) for v in rng.integers(0, 40, 2))
        return {"json": {"pixels": [[0] * cols] * rows if (rows, cols) != (28, 28) else []}}
    if kind == "nan and infinity":
        token = rng.choice(["NaN", "Infinity", "-Infinity", "1e999"])
        return {"content": f'{{"pixels": [[{token}]]}}'.encode(), **as_json}
    if kind == "out of range":
        grid[int(rng.integers(28))][int(rng.integers(28))] = float(rng.choice([-1, 256, 1e30]))
        return {"json": {"pixels": grid}}
    if kind == "6 MB json array":
        return {"content": b'{"pixels": [' + b"0," * (3 * 2**20) + b"0]}", **as_json}
    if kind == "6 MB chunked, no length":  # the size is only known while reading
        chunks = [b'{"pixels": ['] + [b"0," * 2**19] * 12 + [b"0]}"]
        return {"content": iter(chunks), **as_json}
    if kind == "deeply nested json":
        depth = int(rng.integers(1_100, 6_000))
        return {"content": b'{"pixels": ' + b"[" * depth + b"]" * depth + b"}", **as_json}
    if kind == "huge numbers":
        body = json.dumps({"pixels": grid}).replace("0", "1" + "0" * 400, 1)
        return {"content": body.encode(), **as_json}
    if kind == "duplicate keys":
        body = json.dumps({"pixels": grid})[:-1] + ', "pixels": ' + json.dumps(grid) + "}"
        return {"content": body.encode(), **as_json}
    if kind == "wrong types":
        value = rng.choice(["7", "null", "true", '{"a": 1}', '[["12"] ]', '"pixels"'])
        return {"content": f'{{"pixels": {value}}}'.encode(), **as_json}
    if kind == "wrong content type":
        kind_ = rng.choice(["text/plain", "image/png", "application/xml", ""])
        return {"content": png_bytes(np.zeros((28, 28), np.uint8)),
                "headers": {"content-type": str(kind_)}}  # fmt: skip
    raise ValueError(kind)


FUZZ_KINDS = [
    "random bytes", "truncated png", "png claiming 50000x50000", "6 MB upload", "empty file",
    "blank page", "wrong form field", "not json", "wrong shape", "nan and infinity",
    "out of range", "6 MB json array", "6 MB chunked, no length", "deeply nested json",
    "huge numbers", "duplicate keys", "wrong types", "wrong content type",
]  # fmt: skip
BIG = {"6 MB upload", "6 MB json array", "6 MB chunked, no length"}


def test_fuzzed_malformed_requests_get_only_4xx_on_both_connection_kinds(onnx_server, digits):
    """1,000+ malformed requests of 18 kinds, half on one kept-alive connection and half on a
    fresh connection each: every answer is a 4xx with a message, a valid request right after
    an oversized body's 413 succeeds on the same client, and the server stays healthy with
    bounded memory."""
    url, server_log = onnx_server
    rng = np.random.default_rng(0)
    valid = {"json": {"pixels": digits[0][0].tolist()}}
    rss_before = httpx.get(f"{url}/health").json()["rss_mb"]
    statuses: dict[str, set[int]] = {kind: set() for kind in FUZZ_KINDS}
    sent = 0
    with httpx.Client(base_url=url, timeout=60) as kept_alive:
        for round_ in range(34):
            for kind in FUZZ_KINDS:
                if kind in BIG and round_ % 4:  # the 6 MB bodies: 9 of each per connection kind
                    continue
                for client in ("kept-alive", "fresh"):
                    request = _malformed(kind, rng)
                    if client == "kept-alive":
                        r = kept_alive.post("/predict", **request)
                    else:
                        with httpx.Client(base_url=url, timeout=60) as fresh:
                            r = fresh.post("/predict", **request)
                    sent += 1
                    statuses[kind].add(r.status_code)
                    assert 400 <= r.status_code < 500, (kind, r.status_code, r.text[:300])
                    assert r.json()["detail"], kind
                    if r.status_code == 413 and client == "kept-alive":
                        assert r.headers["connection"] == "close"
                        after = kept_alive.post("/predict", **valid)  # no reset, no read error
                        assert after.status_code == 200, after.text
    # clients that hang up halfway through their body, 20 times
    host, port = url.rsplit("//", 1)[1].split(":")
    for i in range(20):
        with socket.create_connection((host, int(port))) as raw:
            kind = "multipart/form-data; boundary=b" if i % 2 else "application/json"
            raw.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                        "Content-Length: 5000\r\n\r\n--b\r\n{".encode())  # fmt: skip
    assert sent >= 1000, sent
    assert statuses["6 MB upload"] == statuses["6 MB json array"] == {413}
    assert statuses["6 MB chunked, no length"] == {413}
    assert statuses["deeply nested json"] == {400} and statuses["wrong content type"] == {415}
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok"
    assert health["rss_mb"] - rss_before < 100, (rss_before, health["rss_mb"])
    assert httpx.post(f"{url}/predict", **valid).json()["digit"] == digits[1][0]
    assert "Traceback" not in server_log.read_text()  # every refusal was handled, none crashed


# --- the published contract: OpenAPI (Schemathesis) and the Open Inference Protocol ---------


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """The shipped ONNX model, served torch-free: what a user of the contract meets."""
    with running_server(None, f"hydra.run.dir={tmp_path_factory.mktemp('contract')}") as url:
        yield url


def test_openapi_document_passes_schemathesis_with_every_check(shipped_server):
    """``st run URL/openapi.json --checks all`` (bounded examples, a fixed seed) from the
    repository root, where it reads schemathesis.toml: no failure in any phase."""
    st = Path(sys.executable).with_name("st")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [str(st), "--no-color", "run", f"{shipped_server}/openapi.json", "--checks", "all",
         "--max-examples", "30", "--seed", "1", "--workers", "1"],
        cwd=root, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(r"Test cases:\s+\d+ generated, \d+ passed", out), out[-3000:]
    assert "/schemathesis.toml" in out and "failure" not in out.lower(), out[-3000:]


def test_openapi_documents_both_request_forms_every_status_and_one_error_schema(shipped_server):
    spec = httpx.get(f"{shipped_server}/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    body = predict["requestBody"]
    assert body["required"] and set(body["content"]) == {"application/json", "multipart/form-data"}
    assert body["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    example = body["content"]["application/json"]["examples"]["one"]["value"]
    answer = httpx.post(f"{shipped_server}/predict", json=example)  # /docs "Try it out"
    assert answer.status_code == 200 and answer.json()["digit"] == 1, answer.text
    assert set(predict["responses"]) == {"200", "400", "413", "415", "422", "503"}
    errors = {r["content"]["application/json"]["schema"]["$ref"]
              for status, r in predict["responses"].items() if status != "200"}  # fmt: skip
    assert errors == {"#/components/schemas/ErrorBody"}
    bad = httpx.post(f"{shipped_server}/predict?return_input=maybe", json=example)
    assert bad.status_code == 422 and isinstance(bad.json()["detail"], str), bad.text


def test_tritonclient_reads_100_test_digits_like_predict(shipped_server, datamodule):
    """The Open Inference Protocol through the standard client: health, metadata, and infer on
    100 real test digits (binary and JSON tensors) answer the digits /predict gives."""
    images, labels = datamodule.tensors["test"]
    images, labels = images[:100].numpy(), labels[:100].tolist()
    client = triton.InferenceServerClient(shipped_server.split("//", 1)[1])
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mnist")
    meta = client.get_model_metadata("mnist")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert "binary_data" in client.get_server_metadata()["extensions"]
    predicted = [
        httpx.post(f"{shipped_server}/predict", json={"pixels": im.tolist()}).json()["digit"]
        for im in images
    ]
    tensor = (images[:, None] / 255).astype(np.float32)
    for binary in (True, False):
        inputs = [triton.InferInput("input", list(tensor.shape), "FP32")]
        inputs[0].set_data_from_numpy(tensor, binary_data=binary)
        outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
        logits = client.infer("mnist", inputs, outputs=outputs).as_numpy("logits")
        assert logits.shape == (100, 10) and np.isfinite(logits).all()
        assert logits.argmax(1).tolist() == predicted, binary
    assert sum(p == y for p, y in zip(predicted, labels, strict=True)) >= 97
    with pytest.raises(triton.InferenceServerException, match="unknown model"):
        client.infer("nope", inputs)
    # the protocol's error form for a malformed tensor
    r = httpx.post(f"{shipped_server}/v2/models/mnist/infer",
                   json={"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                     "datatype": "FP32", "data": [0.5]}]})  # fmt: skip
    assert r.status_code == 400 and "784" in r.json()["error"], r.text
