"""The Open Inference Protocol (KServe v2, REST) beside ``/predict``, so that standard clients
(``tritonclient.http``, KServe tooling) talk to the server without custom code.

    GET  /v2                          server metadata
    GET  /v2/health/live, /ready      200 when up
    GET  /v2/models/mnist             model metadata: input ``input`` FP32 [-1, 1, 28, 28],
                                      output ``logits`` FP32 [-1, 10]
    GET  /v2/models/mnist/ready       200 when the model is loaded
    POST /v2/models/mnist/infer       JSON tensors, or the binary tensor data extension

``input`` holds what the exported ONNX graph takes: grey levels in [0, 1], white ink on black,
already MNIST-shaped (no cropping or centring, unlike ``/predict``). ``logits`` are the
log-probabilities (logits up to a constant: the same softmax, the same argmax). Each image goes
through the same micro-batcher as ``/predict``; errors are the protocol's ``{"error": "..."}``.
These routes are left out of ``/openapi.json``: the protocol has its own specification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from mnist_lab.errors import ImageError, ImageTooLargeError

log = logging.getLogger(__name__)
MODEL = "mnist"
VERSION = "1"
INPUT, OUTPUT = "input", "logits"
MAX_IMAGES = 256  # per infer request
HEADER_LENGTH = "inference-header-content-length"  # the binary data extension's header
TINY = float(np.finfo(np.float32).tiny)  # log(0) would be -inf, which JSON cannot carry


class InferError(ImageError):
    """A request the protocol refuses (answered 400 with ``{"error": ...}``)."""


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def v2_error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def parse_infer(body: bytes, header_length: str | None) -> tuple[dict[str, Any], np.ndarray, bool]:
    """The request's JSON, its ``input`` tensor as uint8 [N, 28, 28] images, and whether the
    client wants the output as binary data."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InferError(f"bad {HEADER_LENGTH} header {header_length!r}")
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InferError(f"request is not valid JSON: {err}") from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InferError(f"expected 'inputs' with one tensor named {INPUT!r}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT or tensor.get("datatype") != "FP32":
        raise InferError(f"expected input {INPUT!r} of datatype FP32")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(type(d) is int for d in shape)
        or shape[1:] != [1, 28, 28]
        or not 1 <= shape[0] <= MAX_IMAGES
    ):
        raise InferError(f"input shape must be [N, 1, 28, 28] with N 1-{MAX_IMAGES}, got {shape}")
    size = shape[0] * 28 * 28
    params = tensor.get("parameters") or {}
    if isinstance(params, dict) and "binary_data_size" in params:
        if params["binary_data_size"] != 4 * size or len(binary) != 4 * size:
            raise InferError(f"binary input must hold {4 * size} bytes (FP32 x {size})")
        x = np.frombuffer(binary, dtype="<f4")
    else:
        try:
            x = np.asarray(tensor.get("data"), dtype=np.float32).reshape(-1)
        except (TypeError, ValueError, RecursionError, OverflowError):
            raise InferError("input 'data' must be numbers") from None
        if x.size != size:
            raise InferError(f"input holds {x.size} values, its shape {shape} needs {size}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InferError("input values must be finite grey levels in [0, 1]")
    images = np.rint(x.reshape(shape[0], 28, 28) * 255).astype(np.uint8)
    return request, images, binary_output(request)


def binary_output(request: dict[str, Any]) -> bool:
    """Whether the client asked for ``logits`` as binary data; InferError for another output."""
    wanted = request.get("outputs") or [{"name": OUTPUT}]
    if not isinstance(wanted, list) or any(
        not isinstance(o, dict) or o.get("name") != OUTPUT for o in wanted
    ):
        raise InferError(f"the only output is {OUTPUT!r}")
    params, top = wanted[0].get("parameters") or {}, request.get("parameters") or {}
    return (isinstance(params, dict) and params.get("binary_data") is True) or (
        isinstance(top, dict) and top.get("binary_data_output") is True
    )


def infer_response(request: dict[str, Any], probs: np.ndarray, binary: bool) -> Response:
    """``logits`` [N, 10] as JSON, or as binary data after the JSON header."""
    logits = np.log(np.maximum(probs, TINY)).astype(np.float32)
    output: dict[str, Any] = {"name": OUTPUT, "datatype": "FP32", "shape": list(logits.shape)}
    body: dict[str, Any] = {"model_name": MODEL, "model_version": VERSION, "outputs": [output]}
    if "id" in request:
        body["id"] = request["id"]
    if not binary:
        output["data"] = logits.reshape(-1).tolist()
        return _json(body)
    data = logits.astype("<f4").tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    head = orjson.dumps(body)
    return Response(
        head + data,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


def v2_router(
    model_name: str,
    platform: str,
    batcher: Callable[[np.ndarray], Awaitable[np.ndarray]],
    read_body: Callable[[Request], Awaitable[bytes]],
) -> APIRouter:
    """The protocol's routes around the server's micro-batcher and its capped body reader."""
    router = APIRouter(prefix="/v2", include_in_schema=False)
    metadata = {
        "name": MODEL,
        "versions": [VERSION],
        "platform": platform,
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, 10]}],
        "parameters": {"model_file": model_name},
    }

    def unknown(name: str, version: str) -> Response | None:
        if name != MODEL:
            return v2_error(404, f"unknown model {name!r}: try {MODEL!r}")
        return None if version == VERSION else v2_error(404, f"unknown version {version!r}")

    @router.get("")
    async def server_metadata() -> Response:
        return _json({"name": "mnist_lab", "version": "0.1.0", "extensions": ["binary_data"]})

    @router.get("/health/live")
    @router.get("/health/ready")
    async def health() -> Response:
        return _json({"live": True, "ready": True})

    @router.get("/models/{name}")
    @router.get("/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = VERSION) -> Response:
        return unknown(name, version) or _json(metadata)

    @router.get("/models/{name}/ready")
    @router.get("/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = VERSION) -> Response:
        return unknown(name, version) or _json({"name": MODEL, "ready": True})

    @router.post("/models/{name}/infer")
    @router.post("/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = VERSION) -> Response:
        if missing := unknown(name, version):
            return missing
        try:
            body = await read_body(request)
            payload, images, binary = parse_infer(body, request.headers.get(HEADER_LENGTH))
        except ClientDisconnect:
            return v2_error(400, "request body incomplete")
        except ImageTooLargeError as err:
            return v2_error(413, str(err))
        except ImageError as err:
            return v2_error(400, str(err))
        try:
            probs = np.stack(await asyncio.gather(*(batcher(image) for image in images)))
        except Exception:  # the model failed on a batch, not on the input
            log.exception("the model failed on a batch")
            return v2_error(503, "the model failed on this request: try again")
        return infer_response(payload, probs, binary)

    return router
