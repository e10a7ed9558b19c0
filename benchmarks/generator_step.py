"""Latency of one generated window: encode the condition once, then a few-step DDIM.

For the default generator (``default_config()``, eval mode, float32, untrained weights: timing
does not depend on their values) and every batch size × sample-step count, one timed call is
what the live engine does per window: ``Denoiser.encode`` + ``sample_windows`` with a different
listener's random low-rank shifts on every batch element. Reported per call (the latency of every
window in the batch) and per window (call / batch, the throughput cost). The budget line is the
window's own duration, W / 25 fps = 320 ms.

Wall time is the median over repeats; process CPU time per call is reported beside it, which is
the steadier number on a shared machine (the 1-minute load average before and after is stored).
CPU runs are repeated for each ``--threads`` value.
Usage: python benchmarks/generator_step.py [--batches 1 8 32] [--steps 1 2 4 8]
                                           [--threads 1 2] [--device cpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from models.face import layout
from models.generator.config import default_config
from models.generator.denoiser import Denoiser, sample_windows
from models.generator.lowrank import LowRank

ROOT = Path(__file__).resolve().parents[1]


def condition(model: Denoiser, b: int, g: torch.Generator, device: torch.device) -> dict:
    cfg = model.config
    c, p = cfg.context, cfg.prev
    shifts = {name: LowRank(0.05 * torch.randn(b, out, cfg.shift_rank, generator=g),
                            0.05 * torch.randn(b, cfg.shift_rank, inp, generator=g))
              for name, (out, inp) in model.shift_targets().items()}  # fmt: skip
    return {
        "speaker_audio": torch.randn(b, c, cfg.audio_dim, generator=g).to(device),
        "speaker_face": torch.rand(b, c, layout.DIM, generator=g).to(device),
        "context_valid": torch.ones(b, c, dtype=torch.bool, device=device),
        "prev": torch.rand(b, p, layout.DIM, generator=g).to(device),
        "prev_valid": torch.ones(b, p, dtype=torch.bool, device=device),
        "shifts": {k: LowRank(s.a.to(device), s.b.to(device)) for k, s in shifts.items()},
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_window(model: Denoiser, b: int, steps: int, device: torch.device,
                min_time: float = 1.0, min_reps: int = 10) -> dict[str, float]:  # fmt: skip
    """Median wall and mean CPU milliseconds of one window call for a batch of ``b``."""
    cond = condition(model, b, torch.Generator().manual_seed(b), device)
    shifts = cond.pop("shifts")
    noise = torch.Generator(device).manual_seed(0)

    def call() -> None:
        memory = model.encode(**cond)
        sample_windows(model, memory, shifts, steps=steps, generator=noise)

    with torch.inference_mode():
        for _ in range(3):
            call()
        sync(device)
        walls, cpu0, start = [], time.process_time(), time.perf_counter()
        while len(walls) < min_reps or time.perf_counter() - start < min_time:
            t = time.perf_counter()
            call()
            sync(device)
            walls.append((time.perf_counter() - t) * 1000)
        cpu = (time.process_time() - cpu0) * 1000 / len(walls)
    wall = statistics.median(walls)
    return {"batch": b, "steps": steps, "call_ms": wall, "window_ms": wall / b,
            "cpu_ms_per_call": cpu, "p90_call_ms": statistics.quantiles(walls, n=10)[-1],
            "reps": len(walls)}  # fmt: skip


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = result["budget_ms"]
    runs = result["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (label, rows) in zip(axes[0], runs.items(), strict=True):
        for b in sorted({r["batch"] for r in rows}):
            mine = [r for r in rows if r["batch"] == b]
            ax.plot([r["steps"] for r in mine], [r["call_ms"] for r in mine], "o-",
                    label=f"batch {b}")  # fmt: skip
        ax.axhline(budget, color="red", ls="--", label=f"window duration {budget:.0f} ms")
        ax.set(xlabel="sample steps (denoiser calls)", ylabel="ms per call (window latency)",
               yscale="log", title=f"{result['device']} {label}")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Generator window latency, default_config ({result['parameters']:,} params)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU intra-op threads to try (default: 1 and the machine's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)  # script-level: reproducible untrained weights
    model = Denoiser(default_config()).to(device).eval()
    cfg = model.config
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch": torch.__version__, "parameters": sum(p.numel() for p in model.parameters()),
        "config": cfg.to_dict(), "budget_ms": 1000 * cfg.window / layout.FPS,
        "shift_layers": list(model.shift_targets()), "runs": {},
        "load_average_before": os.getloadavg()[0],
    }
    default_threads = torch.get_num_threads()
    threads = args.threads or sorted({1, default_threads})
    for n in threads if device.type == "cpu" else [default_threads]:
        torch.set_num_threads(n)
        rows = [time_window(model, b, s, device) for b in args.batches for s in args.steps]
        result["runs"][f"threads={n}"] = rows
        for r in rows:
            print(f"threads={n} batch={r['batch']:3d} steps={r['steps']} "
                  f"call {r['call_ms']:8.2f} ms (p90 {r['p90_call_ms']:8.2f}, "
                  f"cpu {r['cpu_ms_per_call']:8.2f})  per window {r['window_ms']:7.3f} ms")
    torch.set_num_threads(default_threads)
    result["load_average_after"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generator_step.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "generator_step.png")
    print(f"wrote {args.out / 'generator_step.json'} and generator_step.png")


if __name__ == "__main__":
    main()
