"""The HTTP app that ``python -m mnist_lab.serve`` runs around one loaded predictor.

``GET /`` is a draw-a-digit page, ``GET /health`` says which model is loaded, ``POST /predict``
takes an image upload (multipart field ``file``) or JSON ``{"pixels": 28x28 of 0-255}`` and
answers ``{"digit", "probabilities"}`` (its contract, in ``/openapi.json``: ``schema``), and
``/v2/...`` speaks the Open Inference Protocol (``v2``). ``ckpt_path`` may be a checkpoint or
an exported ``.onnx`` model. Bad input gets a 4xx with a message, never a 500; a refused
oversized body is drained (up to ``DRAIN_BYTES``) and answered with ``Connection: close``, so
the client reads the 413 instead of a reset.

Concurrent requests are batched: while the model runs on one batch, new requests queue up and
all of them go through the next forward pass together, so throughput grows with load at no
extra latency when idle (no waiting window).

Lean by design: this module and what it imports (numpy, Pillow, OpenCV, orjson, FastAPI)
never import torch or Lightning, so an ``.onnx`` model is served by ONNX Runtime alone
(torch is loaded only for a ``.ckpt``, by ``mnist_lab.evaluation.inference``; an
import-linter contract in pyproject.toml keeps this whole package torch-free).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from mnist_lab.errors import ImageError, ImageTooLargeError
from mnist_lab.serving.predictor import Predictor
from mnist_lab.serving.preprocess import MAX_BYTES, decode_image, pixels_to_image, to_mnist
from mnist_lab.serving.schema import PREDICT_OPENAPI, PREDICT_RESPONSES, Health
from mnist_lab.serving.v2 import v2_router

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("static") / "index.html"
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and headers around an uploaded file
DRAIN_BYTES = 64 * 2**20  # a refused body up to this size is read and dropped, not reset
JSON_HINT = 'send {"pixels": [[...28 rows of 28 numbers 0-255...]]}'


class UnsupportedMediaError(ImageError):
    """Neither an upload nor JSON (answered with 415)."""


class MicroBatcher:
    """Queue single images and run them through the model together, one batch at a time."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self.batch_sizes: list[int] = []  # recent batch sizes, shown by /health

    async def __call__(self, image: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            self.batch_sizes = [*self.batch_sizes[-99:], len(items)]
            try:
                batch = np.stack([image for image, _ in items])
                probs = await asyncio.to_thread(self.predict, batch)
            except Exception as err:  # a model failure answers every waiting request
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), p in zip(items, probs, strict=True):
                if not future.done():
                    future.set_result(p)


async def read_capped(request: Request) -> bytes:
    """The body, refused as soon as it passes the limit (chunked uploads have no length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise ImageTooLargeError(f"request body over the {MAX_BYTES // 2**20} MB limit")
        chunks.append(chunk)
    return b"".join(chunks)


def preprocess_upload(data: bytes) -> np.ndarray:
    return _preprocess(decode_image, data)


def _preprocess(read: Callable[[Any], Image.Image], data: Any) -> np.ndarray:
    try:
        return to_mnist(read(data))
    except ImageError:
        raise
    except Exception as err:  # an image PIL decodes but cannot convert: still the input's fault
        log.exception("cannot preprocess an uploaded image")
        raise ImageError(
            f"cannot process this image ({type(err).__name__}): send a PNG or JPEG"
        ) from None


def parse_pixels(body: bytes) -> Image.Image:
    """The JSON form: an object with one key, ``pixels``. orjson refuses what ``json`` would
    choke on (nesting over 1,024 levels, NaN, infinities, invalid UTF-8) with an error."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ImageError(f"body is not valid JSON ({err}): {JSON_HINT}") from None
    if not isinstance(payload, dict) or "pixels" not in payload:
        raise ImageError(f'JSON body must be an object with key "pixels": {JSON_HINT}')
    if len(payload) > 1:
        other = ", ".join(repr(k) for k in payload if k != "pixels")
        raise ImageError(f"unknown key(s) {other} in the JSON body: {JSON_HINT}")
    if body.count(b'"pixels"') > 1:  # JSON parsers keep the last of repeated keys silently
        raise ImageError(f'key "pixels" appears more than once: {JSON_HINT}')
    if b"true" in body or b"false" in body:  # numpy reads booleans as numbers: not pixels
        raise ImageError(f"'pixels' must be numbers 0-255, not true/false: {JSON_HINT}")
    return pixels_to_image(payload["pixels"])


def json_response(body: dict[str, Any], status: int = 200, close: bool = False) -> Response:
    """orjson-encoded; ``close`` ends a connection whose request body was not read in full."""
    headers = {"connection": "close"} if close else None
    return Response(orjson.dumps(body), status, headers, "application/json")


def error(status: int, message: str, close: bool = False) -> Response:
    return json_response({"detail": message}, status, close)


async def drain(request: Request) -> bool:
    """Read and drop what is left of a refused body, so closing the connection afterwards does
    not reset it under a client still sending; False when it is too large to bother."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > DRAIN_BYTES:
        return False
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_BYTES:
                return False
    except Exception:  # already consumed (form parsed) or the client went away
        pass
    return True


async def read_input(request: Request) -> np.ndarray:
    """The request's image as a uint8 [28, 28] MNIST-style array; ImageError if unusable."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BYTES + MULTIPART_OVERHEAD:
        raise ImageTooLargeError(
            f"request body is {int(length) / 2**20:.1f} MB, over the "
            f"{MAX_BYTES // 2**20} MB limit: send a smaller image"
        )
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ImageError(
                "multipart upload has no file field named 'file': use -F file=@digit.png"
            )
        data = await upload.read(MAX_BYTES + 1)
        return await run_in_threadpool(preprocess_upload, data)
    if content_type.startswith("application/json"):
        body = await read_capped(request)
        # a 28x28 JSON digit takes ~0.2 ms: cheaper inline than a thread hop
        return _preprocess(parse_pixels, body)
    raise UnsupportedMediaError(
        f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data with a "
        "'file' field, or application/json with 'pixels'"
    )


def rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def create_app(predictor: Predictor, max_batch: int = 64) -> FastAPI:
    """The FastAPI app around one loaded model (tests and other servers can mount it)."""
    batcher = MicroBatcher(predictor.probabilities, max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="mnist_lab", summary="Handwritten digit recognition", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, err: RequestValidationError) -> Response:
        """A malformed query parameter: 422 in the one error form, ``{"detail": "..."}``."""
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        return error(422, problems)

    platform = "onnxruntime_onnx" if Path(predictor.path).suffix == ".onnx" else "pytorch"
    app.include_router(v2_router(predictor.name, platform, batcher, read_capped))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text()

    @app.get("/health", response_model=None, responses={200: {"model": Health}})
    async def health() -> Response:
        sizes = batcher.batch_sizes
        body = {
            "status": "ok",
            "model": predictor.name,
            "mean_batch": round(sum(sizes) / len(sizes), 2) if sizes else None,
            # what the load test divides by the requests it sent: server CPU per request
            "cpu_seconds": round(time.process_time(), 3),
            "rss_mb": round(rss_mb(), 1),
        }
        return json_response(body)

    @app.post(
        "/predict",
        summary="Read one digit",
        description="Send one digit as JSON pixels or as an image upload (multipart `file`). "
        "Either ink colour works; photos and scans are cropped, centred and scaled like MNIST.",
        response_model=None,
        responses=PREDICT_RESPONSES,
        openapi_extra=PREDICT_OPENAPI,
    )
    async def predict(
        request: Request,
        return_input: bool = Query(False, description="also return the 28x28 image seen"),
    ) -> Response:
        try:
            image = await read_input(request)
        except ClientDisconnect:  # gone mid-body: nobody to answer, nothing worth a traceback
            log.info("client disconnected before sending the whole request body")
            return error(400, "request body incomplete", close=True)
        except ImageTooLargeError as err:
            drained = await drain(request)
            return error(413, str(err) + ("" if drained else " (connection closed)"), close=True)
        except UnsupportedMediaError as err:
            return error(415, str(err), close=not await drain(request))
        except ImageError as err:
            return error(400, str(err))
        try:
            probs = await batcher(image)
        except Exception:  # the model failed on this batch, not on the input
            log.exception("the model failed on a batch")
            return error(503, "the model failed on this request: try again")
        body: dict[str, Any] = {
            "digit": int(probs.argmax()),
            "probabilities": [round(float(p), 6) for p in probs],
        }
        if return_input:  # the 28x28 image the model saw, for the page's preview
            body["input"] = image.tolist()
        return json_response(body)

    return app
