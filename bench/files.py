"""Benchmark the embedded file service: big uploads and downloads with bounded server memory.

    .venv/bin/python bench/files.py [--size-mb 1024] [--no-sdk]

Starts ``conveyor server`` (``agent.server.main.serve``) in its own process and samples that
process's RSS every 20 ms while it
  * receives a SIZE upload sent as the SDK sends it (one multipart part, Content-Length), from a
    client that generates the bytes on the fly (so the client holds 1 MiB, not SIZE);
  * sends it back (GET, streamed; the client reads and discards, checking the digest);
  * receives the same upload through the real clearml SDK (``StorageManager.upload_file``),
    unless ``--no-sdk``.
Prints a markdown table: baseline RSS, peak RSS growth over that baseline, time and MB/s.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CHUNK = 1 << 20
SAMPLE_SECONDS = 0.02
SERVE = (
    "import sys; from pathlib import Path; from agent.server.main import serve; "
    "serve('127.0.0.1', 0, Path(sys.argv[1]))"
)
BOUNDARY = "benchboundary0123456789"


class RssSampler:
    """Peak RSS of one process while a block runs (sampled in a thread)."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def start_server(workdir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [PYTHON, "-c", SERVE, str(workdir / "server.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    env: dict[str, str] = {}
    while len(env) < 5:
        line = proc.stdout.readline().strip()
        if not line:
            raise RuntimeError("server exited before printing its CLEARML_* lines")
        if line.startswith("CLEARML_"):
            key, _, value = line.partition("=")
            env[key] = value
    # stdout is no longer read: keep the server's log lines from filling the pipe
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, env


def login(env: dict[str, str]) -> str:
    host, port = _host_port(env["CLEARML_API_HOST"])
    conn = http.client.HTTPConnection(host, port, timeout=60)
    pair = f"{env['CLEARML_API_ACCESS_KEY']}:{env['CLEARML_API_SECRET_KEY']}".encode()
    basic = base64.b64encode(pair).decode()
    conn.request("POST", "/auth.login", b"{}", {"Authorization": f"Basic {basic}"})
    token: str = json.loads(conn.getresponse().read())["data"]["token"]
    return token


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    return host, int(port)


def payload(size: int) -> tuple[Callable[[], Iterator[bytes]], str]:
    """An iterator factory over ``size`` pseudo-random bytes (1 MiB reused) and their sha256."""
    block = os.urandom(CHUNK)
    digest = hashlib.sha256()
    for _ in range(size // CHUNK):
        digest.update(block)

    def chunks() -> Iterator[bytes]:
        for _ in range(size // CHUNK):
            yield block

    return chunks, digest.hexdigest()


def raw_upload(files_host: str, token: str, name: str, size: int) -> str:
    chunks, digest = payload(size)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from chunks()
        yield tail

    host, port = _host_port(files_host)
    conn = http.client.HTTPConnection(host, port, timeout=600)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(head) + size + len(tail)),
    }
    conn.request("POST", "/files", body=body(), headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    if response.status != 200:
        raise RuntimeError(f"upload failed: {response.status} {text}")
    return digest


def download(files_host: str, token: str, name: str) -> str:
    host, port = _host_port(files_host)
    conn = http.client.HTTPConnection(host, port, timeout=600)
    conn.request("GET", f"/files/{name}", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"download failed: {response.status}")
    digest = hashlib.sha256()
    while chunk := response.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


SDK_UPLOAD = """
import sys
from clearml import StorageManager
StorageManager.upload_file(sys.argv[1], sys.argv[2], wait_for_upload=True, retries=1)
"""


def sdk_upload(env: dict[str, str], workdir: Path, size: int, name: str) -> Callable[[], str]:
    """Prepare a SIZE file for the SDK (not timed); returns the timed upload step."""
    chunks, digest = payload(size)
    local = workdir / "sdk-upload.bin"
    with local.open("wb") as fh:
        for chunk in chunks():
            fh.write(chunk)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    child_env.update(env, HOME=str(workdir), CLEARML_NO_DEFAULT_SERVER="1")

    def run() -> str:
        subprocess.run(
            [PYTHON, "-c", SDK_UPLOAD, str(local), f"{env['CLEARML_FILES_HOST']}/{name}"],
            env=child_env,
            check=True,
            capture_output=True,
            timeout=1800,
        )
        return digest

    return run


def measure(label: str, server_pid: int, size: int, step: Callable[[], str]) -> dict[str, object]:
    sampler = RssSampler(server_pid)
    base = sampler.rss()
    start = time.perf_counter()
    with sampler:
        digest = step()
    seconds = time.perf_counter() - start
    return {
        "label": label,
        "base_mb": base / 2**20,
        "growth_mb": (sampler.peak - base) / 2**20,
        "seconds": seconds,
        "mb_s": size / 2**20 / seconds,
        "digest": digest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--no-sdk", action="store_true")
    args = parser.parse_args()
    size = args.size_mb * 2**20
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        workdir = Path(tmp)
        proc, env = start_server(workdir)
        try:
            token = login(env)
            files_host = env["CLEARML_FILES_HOST"]
            stored = workdir / "files" / "bench" / "raw.bin"
            rows = [
                measure(
                    "upload (multipart stream)",
                    proc.pid,
                    size,
                    lambda: raw_upload(files_host, token, "bench/raw.bin", size),
                )
            ]
            assert stored.stat().st_size == size, "stored size differs"
            rows.append(
                measure(
                    "download (GET, streamed)",
                    proc.pid,
                    size,
                    lambda: download(files_host, token, "bench/raw.bin"),
                )
            )
            if rows[1]["digest"] != rows[0]["digest"]:
                raise RuntimeError("downloaded bytes differ from the uploaded ones")
            stored.unlink()
            if not args.no_sdk:
                step = sdk_upload(env, workdir, size, "bench/sdk.bin")
                rows.append(measure("upload (clearml SDK)", proc.pid, size, step))
                sdk_stored = workdir / "files" / "bench" / "sdk.bin"
                assert sdk_stored.stat().st_size == size, "SDK upload size differs"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"\n{args.size_mb} MiB through the embedded file service (server in its own process)\n")
    print("| transfer | server RSS before (MB) | peak RSS growth (MB) | seconds | MB/s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['label']} | {row['base_mb']:.0f} | {row['growth_mb']:.1f} "
            f"| {row['seconds']:.1f} | {row['mb_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
