"""Which layers should carry a listener's shifts? (the ablation of PerFRDiff's Table 4)

For each choice of shifted layer kinds, the hypernetwork is trained with the same recipe, seed
and step budget on top of the bundled generator and style encoder (both frozen), then scored on
listeners never seen in training (the test split), each enrolled from a random 10-s crop of
another of its clips:

- **held-out loss**: the generator's diffusion loss on test windows with the listener's shifts,
  next to the same windows without shifts (fixed diffusion steps and noise), so the gain is the
  personalisation's own effect; in the live sampler's regime (previous frames hidden when it
  runs without feedback, as the shifts are trained);
- **own-listener appropriateness**: FRCorr and FRDist of ``k`` online reactions against the
  listener's own reaction (the person-specific neighbour set), for ``samples`` test samples.

Writes ``benchmarks/results/shift_ablation.json`` and prints a table.

Usage: python benchmarks/shift_ablation.py [--steps 400] [--samples 24] [--k 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from models.data.dataset import ReactDataset
from models.data.torch_windows import WindowDataset
from models.evaluation import collect, score
from models.generator.checkpoint import load_generator
from models.generator.loss import diffusion_loss
from models.generator.predict import GeneratorPredictor
from models.generator.schedule import alphas_cumprod
from models.personal.checkpoint import load_personal
from models.personal.enrolment import enrol
from models.personal.hyper import to_shifts
from models.train.personal import TrainShiftsConfig, train_shifts, with_shift_layers

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "cross-attention q": ("cross_attn_q",),
    "feed-forward out": ("ff_out",),
    "output head": ("head",),
    "q + ff out + head (default)": ("cross_attn_q", "ff_out", "head"),
    "all six kinds": ("cross_attn_q", "cross_attn_kv", "cross_attn_out", "ff_in", "ff_out",
                      "head"),
}  # fmt: skip


def held_out_loss(model, encoder, hyper, test: ReactDataset, windows: int, seed: int  # noqa: ANN001
                  ) -> dict[str, float]:  # fmt: skip
    """Mean diffusion loss on ``windows`` test windows with and without the listener's shifts."""
    cfg = model.config
    data = WindowDataset(test, w=cfg.window, context=cfg.context, prev=cfg.prev)
    pick = np.random.default_rng(seed).choice(len(data), size=min(windows, len(data)),
                                              replace=False)  # fmt: skip
    items = [data[int(k)] for k in pick]
    rng = np.random.default_rng(seed)
    enrolled: dict[int, dict] = {}
    for it in items:
        i = int(it["index"])
        if i not in enrolled:
            enrolled[i] = enrol(encoder, hyper, test.history(i, 10.0, rng)).factors
    ac = alphas_cumprod(cfg.diffusion_steps, cfg.schedule_offset)
    regime = {"prev_drop": 0.0 if cfg.sample_feedback else 1.0}  # as the live sampler runs
    generic = personal = 0.0
    chunks = [items[j: j + 64] for j in range(0, len(items), 64)]
    with torch.no_grad():
        for c, chunk in enumerate(chunks):
            batch = {k: torch.stack([it[k] for it in chunk]) for k in chunk[0]
                     if k not in ("index", "t")}  # fmt: skip
            factors = {name: (torch.stack([enrolled[int(it["index"])][name][0] for it in chunk]),
                              torch.stack([enrolled[int(it["index"])][name][1] for it in chunk]))
                       for name in hyper.targets}  # fmt: skip
            for s in range(4):
                g = torch.Generator().manual_seed(1000 * c + s)
                generic += diffusion_loss(model, batch, ac, g, **regime).item() * len(chunk)
                g = torch.Generator().manual_seed(1000 * c + s)
                personal += diffusion_loss(model, batch, ac, g, to_shifts(factors),
                                           **regime).item() * len(chunk)  # fmt: skip
    n = 4 * len(items)
    return {"generic": generic / n, "personalised": personal / n,
            "gain_percent": 100 * (1 - personal / generic)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default=str(ROOT / ".cache/world-default"))
    ap.add_argument("--weights", default=str(ROOT / "models/weights"))
    ap.add_argument("--runs", default=str(ROOT / ".cache/runs/shift-ablation"))
    ap.add_argument("--feature-cache", default=str(ROOT / ".cache/features-world-default"),
                    help="audio-feature cache (the one `make world` fills)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--windows", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/shift_ablation.json"))
    ap.add_argument("--generic-only", action="store_true",
                    help="only (re)score the generic reference row and merge it into --out")
    args = ap.parse_args()
    weights, runs = Path(args.weights), Path(args.runs)
    base, _ = load_generator(weights / "generator.safetensors")
    style_path = weights / "personal.safetensors"
    test = ReactDataset(args.world, "test", cache_clips=512)
    half = len(test) // 2  # the first half listens, the mirrored half talks: take both evenly
    first = args.samples // 2
    idx = list(range(first)) + list(range(half, half + args.samples - first))
    own = np.eye(len(idx), dtype=bool)
    # the reference: no shifts, same samples, seed and k
    got = collect(test, GeneratorPredictor(base, k=args.k), seed=args.seed, indices=idx,
                  progress=False)  # fmt: skip
    metrics = score(got, own, workers=2)
    generic = {"own_FRCorr": metrics["FRCorr"], "own_FRDist": metrics["FRDist"],
               "FRDiv": metrics["FRDiv"]}  # fmt: skip
    print(f"{'generic (no shifts)':30s} own FRCorr {generic['own_FRCorr']:.3f}  own FRDist "
          f"{generic['own_FRDist']:.1f}", flush=True)
    if args.generic_only:
        saved = json.loads(Path(args.out).read_text())
        saved["generic"] = generic
        Path(args.out).write_text(json.dumps(saved, indent=2) + "\n")
        print(f"updated {args.out}")
        return
    results = {}
    for name, layers in VARIANTS.items():
        start = time.perf_counter()
        out = runs / "-".join(layers)
        summary = train_shifts(TrainShiftsConfig(
            data_root=args.world, out_dir=out, generator=weights / "generator.safetensors",
            style=style_path, shift_layers=layers, steps=args.steps, seed=args.seed,
            feature_cache=args.feature_cache),
            progress=False)  # fmt: skip
        model = with_shift_layers(base, layers)
        encoder, hyper, _ = load_personal(out / "personal.safetensors")
        loss = held_out_loss(model, encoder, hyper, test, args.windows, args.seed)
        cache: dict[int, dict] = {}

        def shifts_for(sample, encoder=encoder, hyper=hyper, cache=cache):  # noqa: ANN001, ANN202
            if sample.index not in cache:
                rng = np.random.default_rng([args.seed, sample.index])
                cache[sample.index] = enrol(encoder, hyper,
                                            test.history(sample.index, 10.0, rng)).factors
            return cache[sample.index]

        got = collect(test, GeneratorPredictor(model, k=args.k, shifts_for=shifts_for),
                      seed=args.seed, indices=idx, progress=False)  # fmt: skip
        metrics = score(got, own, workers=2)
        results[name] = {"layers": list(layers), "hyper_parameters": summary["hyper_parameters"],
                         "held_out_loss": loss, "own_FRCorr": metrics["FRCorr"],
                         "own_FRDist": metrics["FRDist"], "FRDiv": metrics["FRDiv"],
                         "train_seconds": summary["seconds"],
                         "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        r = results[name]
        print(f"{name:30s} hyper {r['hyper_parameters']:>8,}  held-out loss "
              f"{loss['personalised']:.4f} vs {loss['generic']:.4f} ({loss['gain_percent']:+.1f}%)"
              f"  own FRCorr {r['own_FRCorr']:.3f}  own FRDist {r['own_FRDist']:.1f}", flush=True)
    Path(args.out).write_text(json.dumps({"steps": args.steps, "samples": len(idx), "k": args.k,
                                          "seed": args.seed, "generic": generic,
                                          "variants": results}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
