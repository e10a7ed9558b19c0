"""Per-frame cost of each perception stage on a real clip, median and p95, saved as JSON + PNG.

Stages, timed one frame at a time as the live service runs them:
  decode          PyAV decode + RGB conversion of one source frame
  pfl_crop        cropping and resizing the frame to the 256² PFL window
  landmarker_crop FaceLandmarker (video mode) on the PFL crop — the steady-state path
  coefficients    landmarker output → 58-d frame
  extractor_push  the whole streaming face extractor per frame (crop + landmarker + coefficients)
  landmarker_full FaceLandmarker on the whole frame — the baseline without PFL, and the cost of
                  the warm-up / re-anchor search frames
  audio_push      streaming MFCC for one 40 ms chunk of real speech (16 kHz)
Usage: python benchmarks/perception.py [--clip PATH] [--frames N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

from models.face import layout  # noqa: E402
from server.perception.audio import AudioFeatureStream, load_audio  # noqa: E402
from server.perception.coefficients import coefficients  # noqa: E402
from server.perception.extract import StreamingFaceExtractor  # noqa: E402
from server.perception.landmarker import FaceLandmarker  # noqa: E402
from server.perception.pfl import PflConfig, window_from_boxes  # noqa: E402
from server.perception.video import iter_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1000


def summary(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "n": len(a)}  # fmt: skip


def run(clip: Path, frames: int, speech: Path | None) -> dict:
    costs: dict[str, list[float]] = {k: [] for k in (
        "decode", "pfl_crop", "landmarker_crop", "coefficients", "extractor_push",
        "landmarker_full", "audio_push")}  # fmt: skip
    decoded = []
    it = iter(iter_frames(clip))
    for _ in range(frames):
        t = time.perf_counter()
        item = next(it, None)
        if item is None:
            break
        costs["decode"].append((time.perf_counter() - t) * 1000)
        decoded.append(item[1])
    cfg = PflConfig()
    with FaceLandmarker(video=True) as full:
        boxes = []
        for k, rgb in enumerate(decoded):
            obs, ms = timed(full.detect, rgb, k * 40)
            costs["landmarker_full"].append(ms)
            boxes.append(obs.box() if obs else None)
    window = window_from_boxes(boxes, decoded[0].shape[1::-1], cfg).with_ref_scale(1.0)
    with FaceLandmarker(video=True) as crop_lm:
        for k, rgb in enumerate(decoded):
            crop, ms = timed(window.crop, rgb)
            costs["pfl_crop"].append(ms)
            obs, ms = timed(crop_lm.detect, crop, k * 40)
            costs["landmarker_crop"].append(ms)
            if obs is not None:
                costs["coefficients"].append(timed(coefficients, obs, window)[1])
    with StreamingFaceExtractor(cfg, window=window) as ex:
        for k, rgb in enumerate(decoded):
            costs["extractor_push"].append(timed(ex.push, rgb, k / layout.FPS)[1])
    if speech is not None:
        pcm = load_audio(speech)
        stream = AudioFeatureStream()
        for i in range(0, min(len(pcm), frames * 640), 640):
            costs["audio_push"].append(timed(stream.push, pcm[i: i + 640])[1])
    return {
        "clip": clip.name, "frames": len(decoded), "frame_size": list(decoded[0].shape[1::-1]),
        "machine": {"cpu_count": os.cpu_count(), "arch": platform.machine(),
                    "python": platform.python_version()},
        "stages": {k: summary(v) for k, v in costs.items() if v},
    }  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["stages"])
    med = [result["stages"][n]["median_ms"] for n in names]
    p95 = [result["stages"][n]["p95_ms"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    y = np.arange(len(names))
    ax.barh(y - 0.2, med, 0.4, label="median")
    ax.barh(y + 0.2, p95, 0.4, label="p95")
    ax.axvline(40, color="grey", ls="--", lw=1, label="40 ms frame period")
    ax.set_yticks(y, names)
    ax.set_xlabel("ms per frame (wall clock, this machine)")
    ax.set_title(f"Perception cost per frame — {result['clip']}, {result['frames']} frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT / ".cache/media/franck.mp4")
    parser.add_argument("--speech", type=Path,
                        default=ROOT / ".cache/media/speech/demo-congrats.wav")
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    speech = args.speech if args.speech.is_file() else None
    result = run(args.clip, args.frames, speech)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "perception.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "perception.png")
    print(f"{'stage':<16} {'median ms':>10} {'p95 ms':>8}")
    for name, s in result["stages"].items():
        print(f"{name:<16} {s['median_ms']:>10.2f} {s['p95_ms']:>8.2f}")
    print(f"saved {args.out / 'perception.json'} and perception.png")


if __name__ == "__main__":
    main()
