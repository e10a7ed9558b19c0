"""What does each part of the personality model contribute? (the ablation of the RPR paper's
Table 2, on the synthetic world)

Every variant is trained by the same recipe (``models.train.personality``), seed and step budget
on the bundled generator and enrolment path, and scored on the test persons, never seen in
training (both roles of each test session): MSE, PCC and CCC per trait, per person (the mean
prediction over one centred 10-s crop of each of their clips) and per clip. Variants:

- ``direct`` (V1): traits straight from the clip's behaviour (style encoder + MLP), no cognition
  simulation, trait loss only;
- ``vector-gcn`` (V4): vector nodes (each node matrix flattened) and a standard GCN, no edges;
- ``matrix-no-edges``: matrix nodes and 2D message passing without edge matrices;
- ``full`` (V9): matrix nodes, matrix edges, the 2D-GNN of Eq. 9;
- with ``--extra``: ``full`` without the reconstruction loss (trait loss only), ``full``
  with the enrolment path frozen (no end-to-end training), and V1 and ``full`` with the style
  encoder copy as bundled (no statistics pooling, ``style_stats=False``).

Writes ``benchmarks/results/personality_ablation.json`` and prints a markdown table.

Usage: python benchmarks/personality_ablation.py --world .cache/world-default [--steps 300]
       [--extra] [--only "NAME;NAME"] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from models.data.react_layout import TRAIT_NAMES
from models.train.personality import TrainPersonalityConfig, train_personality

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    "V1 direct (no cognition)": {"variant": "direct"},
    "vector nodes + GCN": {"variant": "vector-gcn"},
    "matrix nodes, no edges": {"variant": "matrix-no-edges"},
    "full (matrix nodes + edges)": {"variant": "full"},
}
EXTRA: dict[str, dict[str, Any]] = {
    "full, trait loss only": {"variant": "full", "rec_weight": 0.0},
    "full, enrolment path frozen": {"variant": "full", "lr_personal": 0.0},
    "V1 direct, no statistics pooling": {"variant": "direct", "style_stats": False},
    "full, no statistics pooling": {"variant": "full", "style_stats": False},
}
SHORT = {"openness": "O", "conscientiousness": "C", "extraversion": "E", "agreeableness": "A",
         "neuroticism": "N"}  # fmt: skip


def _f(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(results: dict[str, Any], level: str) -> str:
    head = ("| variant | " + " | ".join(f"{SHORT[t]} MSE" for t in TRAIT_NAMES) + " | MSE | "
            + " | ".join(f"{SHORT[t]} PCC" for t in TRAIT_NAMES) + " | PCC | "
            + " | ".join(f"{SHORT[t]} CCC" for t in TRAIT_NAMES) + " | CCC |")
    lines = [head, "|" + "---|" * (1 + 3 * 6)]
    for name, r in results.items():
        m = r["test"][level]
        cells = [_f(m[f"{t}_mse"], 4) for t in TRAIT_NAMES] + [_f(m["mean_mse"], 4)]
        cells += [_f(m[f"{t}_pcc"]) for t in TRAIT_NAMES] + [_f(m["mean_pcc"])]
        cells += [_f(m[f"{t}_ccc"]) for t in TRAIT_NAMES] + [_f(m["mean_ccc"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default=str(ROOT / ".cache/world-default"))
    parser.add_argument("--runs", default=str(ROOT / ".cache/runs/personality-ablation"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/personality_ablation.json"))
    parser.add_argument("--steps", type=int, default=TrainPersonalityConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extra", action="store_true",
                        help="also the end-to-end and no-statistics-pooling rows")
    parser.add_argument("--only", help="variant names (as in the table) to run, separated by ;")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    variants = {**VARIANTS, **(EXTRA if args.extra else {})}
    if args.only:
        wanted = [w.strip() for w in args.only.split(";")]
        unknown = [w for w in wanted if w not in {**VARIANTS, **EXTRA}]
        if unknown:
            parser.error(f"unknown variants {unknown}; known: {list({**VARIANTS, **EXTRA})}")
        variants = {w: {**VARIANTS, **EXTRA}[w] for w in wanted}
    results: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for i, (name, overrides) in enumerate(variants.items()):
        run = Path(args.runs) / f"{i}-{overrides['variant']}-{len(overrides)}"
        cfg = TrainPersonalityConfig(data_root=args.world, out_dir=run, steps=args.steps,
                                     seed=args.seed, device=args.device,
                                     feature_cache=ROOT / ".cache/features-world-default",
                                     **overrides)  # fmt: skip
        summary = train_personality(cfg, progress=True)
        results[name] = {**summary["metrics"], "overrides": overrides,
                         "seconds": summary["seconds"], "parameters": summary["parameters"],
                         "reconstruction_val": summary["reconstruction_val"]}  # fmt: skip
    mean_row = {"test": {"person": summary["metrics"]["test_mean_predictor"]}}
    report = {"steps": args.steps, "seed": args.seed, "world": args.world,
              "seconds": round(time.perf_counter() - start, 1),
              "samples": summary["samples"], "variants": results,
              "mean_predictor": mean_row["test"]["person"],
              "torch_threads": torch.get_num_threads()}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"test persons, person level (N = {summary['samples']['test']['persons']}):")
    print(table({**results, "mean of the train traits": mean_row}, "person"))
    print(f"\ntest clips, one 10-s crop each (N = {summary['samples']['test']['clips']}):")
    print(table(results, "clip"))
    print(f"\n{report['seconds']:.0f} s in all; {out}")


if __name__ == "__main__":
    main()
