"""Load-test the prediction server: requests/s and p50/p99 latency of single-image requests.

    python -m mnist_lab.loadtest --ckpt PATH           # starts `mnist_lab.serve` on a free port
    python -m mnist_lab.loadtest --url http://127.0.0.1:8000

Each of ``--concurrency`` clients sends one request, waits for the answer and sends the next
(closed loop) for ``--seconds``, with real MNIST test digits as JSON pixels and as PNG uploads.
The client runs on the same machine as the server, so on 2 cores the numbers include the
client's own CPU use: they are a lower bound for the server alone.
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

from mnist_lab.hardware import machine_info
from mnist_lab.mnist_files import load_split


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(ckpt: str, port: int, *overrides: str, timeout: float = 120) -> Iterator[str]:
    """``python -m mnist_lab.serve`` as a real subprocess; yields its URL once /health answers."""
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_lab.serve", f"ckpt_path={ckpt}", f"port={port}",
         "log_level=warning", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                assert proc.stdout is not None  # stdout=PIPE
                raise RuntimeError(f"server exited ({proc.returncode}):\n{proc.stdout.read()}")
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


def payloads(n: int = 256) -> dict[str, list[dict[str, Any]]]:
    """Request bodies for the first ``n`` test digits, in both accepted forms."""
    images = load_split("test")[0][:n]
    pngs = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image.numpy()).save(buf, format="PNG")
        pngs.append({"files": {"file": ("digit.png", buf.getvalue(), "image/png")}})
    return {
        "json": [{"json": {"pixels": image.tolist()}} for image in images],
        "file": pngs,
    }


async def _load(url: str, bodies: list[dict[str, Any]], seconds: float, concurrency: int):
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < stop:
                start = time.perf_counter()
                response = await client.post("/predict", **bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200
                i += concurrency

        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
        "max_ms": round(ms[-1], 2),
    }


def load_test(url: str, seconds: float, concurrency: int, forms: list[str]) -> dict[str, Any]:
    bodies = payloads()
    result: dict[str, Any] = {
        "url": url,
        "concurrency": concurrency,
        "health": httpx.get(f"{url}/health").json(),
    }
    for form in forms:
        asyncio.run(_load(url, bodies[form], min(2.0, seconds), concurrency))  # warm-up
        result[form] = asyncio.run(_load(url, bodies[form], seconds, concurrency))
    result["mean_batch"] = httpx.get(f"{url}/health").json()["mean_batch"]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m mnist_lab.loadtest", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--ckpt", help="checkpoint, run dir or .onnx: start a server for it")
    target.add_argument("--url", help="an already running server")
    parser.add_argument("--seconds", type=float, default=10.0, help="per form (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients (default 8)")
    parser.add_argument("--forms", nargs="+", default=["json", "file"], choices=["json", "file"])
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(running_server(args.ckpt, free_port()))
        result = load_test(url, args.seconds, args.concurrency, args.forms)
    result["cpu_count"] = os.cpu_count()
    result["machine"] = machine_info()  # the same block as every benchmark JSON
    if args.ckpt:
        result["ckpt"] = args.ckpt
    for form in args.forms:
        r = result[form]
        print(
            f"{form:4s}: {r['requests_per_s']:7.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  ({r['requests']} requests, {r['errors']} errors, "
            f"{args.concurrency} clients)"
        )
    print(f"mean batch per forward pass: {result['mean_batch']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
