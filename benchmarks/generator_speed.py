"""Generator speed: the live setting side by side with a PerFRDiff-like one, and enrolment time.

One timed call is what the live engine does per window for a batch of sessions (each with its
own listener's low-rank shifts): encode the speaker context and the listener's previous frames,
then sample. Two settings run on the same network and weights:

- **live** (the default): a window of W = 8 frames (320 ms) with the bundled config's tuned live
  sampler (``sample_steps`` deterministic DDIM steps, ``sample_guidance``; 2 steps with guidance
  1.5, i.e. 4 decoder calls and 2 encoder calls, for the bundled weights);
- **PerFRDiff-like**: a window of 50 frames (2 s), 50 DDIM steps and classifier-free guidance
  (scale 2, so two decoder calls per step), as the published system samples.

For batch sizes 1, 8 and 64 it reports windows per second, the per-window latency (median and
p95 of the call) and the real-time factor (seconds of reaction generated per second of compute,
per session: above 1 keeps up); per CPU thread count (1 = one core). Enrolment: one 10-s clip
(250 frames) through the style encoder and hypernetwork, median and p95.

Weights: the bundled ones (``models/weights``) when present; timing does not depend on their
values. Writes ``benchmarks/results/generator_speed.json`` and ``generator_speed.png``.

Usage: python benchmarks/generator_speed.py [--batches 1 8 64] [--threads 1 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from models.face import layout
from models.generator.denoiser import Denoiser, Memory, sample_windows
from models.generator.lowrank import LowRank
from models.personal.enrolment import enrol
from models.weights import load_default

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "live": {"window": 8, "steps": None, "guidance": None, "full_ddim": False},  # from config
    "perfrdiff_like": {"window": 50, "steps": 50, "guidance": 2.0, "full_ddim": True},
}


def with_window(model: Denoiser, window: int) -> Denoiser:
    """The same weights generating ``window`` frames (positions are sinusoidal)."""
    twin = Denoiser(dataclasses.replace(model.config, window=window))
    twin.load_state_dict(model.state_dict())
    return twin.to(next(model.parameters()).device).eval()


def inputs(model: Denoiser, b: int, device: torch.device) -> tuple[dict, dict]:
    cfg = model.config
    g = torch.Generator().manual_seed(b)
    shifts = {name: LowRank(0.05 * torch.randn(b, out, cfg.shift_rank, generator=g).to(device),
                            0.05 * torch.randn(b, cfg.shift_rank, inp, generator=g).to(device))
              for name, (out, inp) in model.shift_targets().items()}  # fmt: skip
    cond = {
        "speaker_audio": torch.randn(b, cfg.context, cfg.audio_dim, generator=g).to(device),
        "speaker_face": torch.rand(b, cfg.context, layout.DIM, generator=g).to(device),
        "context_valid": torch.ones(b, cfg.context, dtype=torch.bool, device=device),
        "prev": torch.rand(b, cfg.prev, layout.DIM, generator=g).to(device),
        "prev_valid": torch.ones(b, cfg.prev, dtype=torch.bool, device=device),
    }
    return cond, shifts


def timed(fn, device: torch.device, min_time: float, min_reps: int) -> list[float]:  # noqa: ANN001
    for _ in range(2):
        fn()
    out, start = [], time.perf_counter()
    while len(out) < min_reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(1000 * (time.perf_counter() - t))
    return out


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def run_setting(base: Denoiser, name: str, b: int, device: torch.device,
                min_time: float) -> dict:  # fmt: skip
    s = SETTINGS[name]
    model = with_window(base, s["window"])
    cond, shifts = inputs(model, b, device)
    gen = torch.Generator(device).manual_seed(0)

    def call() -> None:
        memory = model.encode(**cond)
        uncond = None
        if s["guidance"] != 1.0:
            off = dict(cond, context_valid=torch.zeros_like(cond["context_valid"]))
            uncond = model.encode(**off)
        sample_windows(model, Memory(*memory), shifts, steps=s["steps"], generator=gen,
                       guidance=s["guidance"], uncond=uncond,
                       full_ddim=s["full_ddim"])  # fmt: skip

    with torch.inference_mode():
        calls = timed(call, device, min_time, 3 if s["steps"] > 8 else 10)
    median = statistics.median(calls)
    seconds = s["window"] / layout.FPS
    return {"setting": name, "batch": b, **s, "window_ms": seconds * 1000,
            "latency_ms_median": median, "latency_ms_p95": p95(calls),
            "windows_per_s": 1000 * b / median, "realtime_factor": 1000 * seconds / median,
            "reps": len(calls)}  # fmt: skip


def enrolment_time(models, device: torch.device, min_time: float) -> dict:  # noqa: ANN001
    clip = torch.rand(10 * layout.FPS, layout.DIM).to(device)
    calls = timed(lambda: enrol(models.style, models.hyper, clip), device, min_time, 10)
    return {"frames": 10 * layout.FPS, "ms_median": statistics.median(calls), "ms_p95": p95(calls),
            "reps": len(calls)}  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in runs.items():
        for name, marker in (("live", "o-"), ("perfrdiff_like", "s--")):
            mine = [r for r in rows if r["setting"] == name]
            xs = [r["batch"] for r in mine]
            axes[0].plot(xs, [r["latency_ms_median"] for r in mine], marker,
                         label=f"{name}, {label}")  # fmt: skip
            axes[1].plot(xs, [r["realtime_factor"] for r in mine], marker,
                         label=f"{name}, {label}")  # fmt: skip
    axes[0].axhline(320, color="red", ls=":", label="live window duration (320 ms)")
    axes[0].set(xscale="log", yscale="log", xlabel="batch (sessions)",
                ylabel="latency per window call (ms, median)")  # fmt: skip
    axes[1].axhline(1, color="red", ls=":", label="real time")
    axes[1].set(xscale="log", yscale="log", xlabel="batch (sessions)",
                ylabel="real-time factor per session")  # fmt: skip
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Generator speed on {result['device']} ({result['parameters']:,} params)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    models = load_default(args.device)
    device = next(models.generator.parameters()).device
    live = models.generator.config
    SETTINGS["live"].update(window=live.window, steps=live.sample_steps,
                            guidance=live.sample_guidance)  # fmt: skip
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in models.generator.parameters()),
        "settings": SETTINGS, "runs": {}, "load_average_before": os.getloadavg()[0],
    }  # fmt: skip
    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    for n in threads if device.type == "cpu" else [default_threads]:
        torch.set_num_threads(n)
        label = f"threads={n}" if device.type == "cpu" else "gpu"
        rows = [run_setting(models.generator, name, b, device, args.min_time)
                for name in SETTINGS for b in args.batches]  # fmt: skip
        result["runs"][label] = rows
        for r in rows:
            print(f"{label} {r['setting']:15s} batch {r['batch']:3d}: "
                  f"{r['latency_ms_median']:9.1f} ms/window call (p95 {r['latency_ms_p95']:9.1f})"
                  f"  {r['windows_per_s']:8.1f} windows/s  real-time x{r['realtime_factor']:.2f}")
        result.setdefault("enrolment", {})[label] = enrolment_time(models, device, args.min_time)
        e = result["enrolment"][label]
        print(f"{label} enrolment of a 10-s clip: {e['ms_median']:.1f} ms (p95 {e['ms_p95']:.1f})")
    torch.set_num_threads(default_threads)
    result["load_average_after"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generator_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "generator_speed.png")
    print(f"wrote {args.out / 'generator_speed.json'} and generator_speed.png")


if __name__ == "__main__":
    main()
