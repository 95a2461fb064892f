"""Load-test the prediction server: requests/s and p50/p99 latency of single-image requests.

    python -m mnist_lab.loadtest --ckpt PATH           # starts `mnist_lab.serve` on a free port
    python -m mnist_lab.loadtest --url http://127.0.0.1:8000

Each of ``--concurrency`` clients sends one request, waits for the answer and sends the next
(closed loop) for ``--seconds``, with real MNIST test digits as JSON pixels and as PNG uploads
to ``/predict``, and as JSON FP32 tensors to the Open Inference Protocol's
``/v2/models/mnist/infer`` (form ``v2``).
The client runs on the same machine as the server, so on 2 cores the numbers include the
client's own CPU use: they are a lower bound for the server alone.

The clients write pre-built HTTP/1.1 requests on kept-alive sockets and parse only the status
line and Content-Length: 0.02-0.04 ms of CPU a request, where an ``httpx`` async client took
0.64-0.72 ms, CPU the server on the same 2 cores then lacked (docs/serving.md). The result
says where the CPU went: the server's CPU per request (from its ``/health``) and the load
generator's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from mnist_lab.data.files import load_split
from mnist_lab.training.hardware import machine_info


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    ckpt: str,
    port: int,
    *overrides: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """``python -m mnist_lab.serve`` as a real subprocess; yields its URL once /health answers.
    ``env`` replaces its environment; ``log`` is a file for its output (default: a pipe read
    only if it fails to start)."""
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as files:
        output = files.enter_context(log.open("w")) if log else subprocess.PIPE
        proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_lab.serve", f"ckpt_path={ckpt}", f"port={port}",
             "log_level=warning", *overrides],
            stdout=output, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                said = log.read_text() if log else proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"server exited ({proc.returncode}):\n{said[-4000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {port} not ready after {timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


BOUNDARY = "mnistlabboundary7MA4YWxkTrZu0gW"
FORMS = ["json", "file", "v2"]
PATHS = {"json": "/predict", "file": "/predict", "v2": "/v2/models/mnist/infer"}


def payloads(n: int = 256) -> dict[str, list[tuple[str, bytes]]]:
    """(content type, body) of the first ``n`` test digits, in every form of ``FORMS``."""
    images = load_split("test")[0][:n]
    forms: dict[str, list[tuple[str, bytes]]] = {form: [] for form in FORMS}
    for image in images:
        tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                  "data": (image.flatten().numpy() / 255).tolist()}  # fmt: skip
        forms["v2"].append(("application/json", json.dumps({"inputs": [tensor]}).encode()))
        buf = io.BytesIO()
        Image.fromarray(image.numpy()).save(buf, format="PNG")
        forms["json"].append(("application/json", json.dumps({"pixels": image.tolist()}).encode()))
        part = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="digit.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        forms["file"].append(
            (
                f"multipart/form-data; boundary={BOUNDARY}",
                part + buf.getvalue() + f"\r\n--{BOUNDARY}--\r\n".encode(),
            )
        )
    return forms


def http_request(host: str, content_type: str, body: bytes, path: str = "/predict") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, length = int(head[9:12]), 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _load(url: str, requests: list[bytes], seconds: float, concurrency: int):
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        i = offset
        while time.perf_counter() < stop:
            start = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, _ = await read_response(reader)
            latencies.append(time.perf_counter() - start)
            errors += status != 200
            i += concurrency
        writer.close()

    cpu, began = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
        "max_ms": round(ms[-1], 2),
        "client_cpu_ms_per_request": round(1000 * cpu / len(ms), 3),
    }


def _run(coroutine: Any) -> Any:
    """asyncio with uvloop when installed (uvicorn[standard] brings it), like the server."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def load_test(url: str, seconds: float, concurrency: int, forms: list[str]) -> dict[str, Any]:
    bodies = payloads()
    host = url.split("//", 1)[1]
    result: dict[str, Any] = {
        "url": url,
        "concurrency": concurrency,
        "health": httpx.get(f"{url}/health").json(),
    }
    for form in forms:
        requests = [http_request(host, kind, body, PATHS[form]) for kind, body in bodies[form]]
        _run(_load(url, requests, min(2.0, seconds), concurrency))  # warm-up
        before = httpx.get(f"{url}/health").json()["cpu_seconds"]
        result[form] = _run(_load(url, requests, seconds, concurrency))
        after = httpx.get(f"{url}/health").json()["cpu_seconds"]
        served = result[form]["requests"]
        result[form]["server_cpu_ms_per_request"] = round(1000 * (after - before) / served, 3)
    health = httpx.get(f"{url}/health").json()
    result["mean_batch"], result["server_rss_mb"] = health["mean_batch"], health["rss_mb"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m mnist_lab.loadtest", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--ckpt", help="checkpoint, run dir or .onnx: start a server for it")
    target.add_argument("--url", help="an already running server")
    parser.add_argument("--seconds", type=float, default=10.0, help="per form (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients (default 8)")
    parser.add_argument("--forms", nargs="+", default=FORMS, choices=FORMS)
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        began = time.perf_counter()
        url = args.url or stack.enter_context(running_server(args.ckpt, free_port()))
        ready = time.perf_counter() - began  # interpreter, imports, model: until /health
        result = load_test(url, args.seconds, args.concurrency, args.forms)
    if args.ckpt:
        result["startup_seconds"] = round(ready, 2)
    result["cpu_count"] = os.cpu_count()
    result["machine"] = machine_info()  # the same block as every benchmark JSON
    if args.ckpt:
        result["ckpt"] = args.ckpt
    for form in args.forms:
        r = result[form]
        print(
            f"{form:4s}: {r['requests_per_s']:7.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  ({r['requests']} requests, {r['errors']} errors, "
            f"{args.concurrency} clients)  CPU per request: server "
            f"{r['server_cpu_ms_per_request']:.2f} ms, load generator "
            f"{r['client_cpu_ms_per_request']:.2f} ms"
        )
    print(
        f"mean batch per forward pass: {result['mean_batch']}, server RSS "
        f"{result['server_rss_mb']} MB"
        + (f", ready {result['startup_seconds']} s after start" if args.ckpt else "")
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result
