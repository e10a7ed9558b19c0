"""``rapport stream VIDEO --server URL --out OUT.npz``: the command-line face of the client."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.face.layout import FPS
from server.client.session import ClientError, save, stream_file

log = logging.getLogger(__name__)


def add_stream_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``rapport stream`` on the CLI's subparsers."""
    p = subparsers.add_parser("stream", help="stream a video file to a server as a live speaker")
    p.add_argument("video", help="any video file ffmpeg can read")
    p.add_argument("--audio", help="audio file to use instead of the video's own track")
    p.add_argument("--server", required=True, help="server URL, e.g. ws://127.0.0.1:8000")
    p.add_argument("--listener", default="generic", help="listener id (default: generic)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--api-key", help="API key (sent as X-API-Key)")
    p.add_argument("--token", help="short-lived stream token instead of an API key")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="media seconds per wall second; 0 = as fast as allowed",
    )
    p.add_argument("--limit-s", type=float, help="stream only the first S seconds")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a start option (window, steps, guidance, seed, posnet, video); repeat",
    )
    p.add_argument("--resume", action="store_true", help="resume the session after a drop")
    p.set_defaults(func=run_stream)
    return p


def _options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_stream(args: argparse.Namespace) -> int:
    """``rapport stream``: stream, save the .npz, write a one-paragraph summary."""
    try:
        result = asyncio.run(stream_file(
            Path(args.video), url=args.server, audio=args.audio and Path(args.audio),
            listener=args.listener, api_key=args.api_key, token=args.token,
            options=_options(args.option), speed=args.speed, limit_s=args.limit_s,
            resume=args.resume,
        ))  # fmt: skip
        code = 0
    except ClientError as err:
        log.error("stream failed: %s", err)
        if err.result is None:
            return 1
        result, code = err.result, 1
    out = save(result, args.out)
    lat = result.latency_ms[np.isfinite(result.latency_ms)]
    latency = (
        f"{np.median(lat):.0f} ms median, {np.percentile(lat, 95):.0f} ms p95"
        if len(lat)
        else "n/a"
    )
    sys.stdout.write(
        f"{out}: {len(result.start_frames)} windows, {len(result.frames)} frames "
        f"({len(result.frames) / FPS:.1f} s); latency {latency}; sent {result.sent['video']} "
        f"frames, {result.sent['audio']} audio chunks; {len(result.errors)} errors, "
        f"{len(result.events)} events, {result.resumes} resumes\n"
    )
    return code
