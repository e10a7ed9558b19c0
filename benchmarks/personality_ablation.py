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
- with ``--extra``: ``full`` without the auxiliary trait loss on the style vector
  (``aux_weight=0``, the recipe before it), ``full`` without the reconstruction loss (trait
  loss only), ``full`` with the enrolment path frozen (no end-to-end training), and V1 and
  ``full`` with the style encoder copy as bundled (no statistics pooling, ``style_stats=False``).

Every variant is trained once per seed (``--seeds 0,1,2``): with 68 training persons the
recipe's outcome depends on the seed (the draw of persons, crops and noise, and the graph
network's initialisation), so the table reports each variant's mean and standard deviation over
the seeds beside the per-seed figures. ``--jobs`` trains that many runs side by side, one torch
thread each.

Writes ``benchmarks/results/personality_ablation.json`` and prints markdown tables.

Usage: python benchmarks/personality_ablation.py --world .cache/world-default [--steps 300]
       [--seeds 0,1,2] [--jobs 2] [--extra] [--only "NAME;NAME"] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.data.react_layout import TRAIT_NAMES
from models.train.personality import TrainPersonalityConfig, train_many

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    "V1 direct (no cognition)": {"variant": "direct"},
    "vector nodes + GCN": {"variant": "vector-gcn"},
    "matrix nodes, no edges": {"variant": "matrix-no-edges"},
    "full (matrix nodes + edges)": {"variant": "full"},
}
EXTRA: dict[str, dict[str, Any]] = {
    "full, no auxiliary style loss": {"variant": "full", "aux_weight": 0.0},
    "full, trait loss only": {"variant": "full", "rec_weight": 0.0},
    "full, enrolment path frozen": {"variant": "full", "lr_personal": 0.0},
    "V1 direct, no statistics pooling": {"variant": "direct", "style_stats": False},
    "full, no statistics pooling": {"variant": "full", "style_stats": False},
}
SHORT = {"openness": "O", "conscientiousness": "C", "extraversion": "E", "agreeableness": "A",
         "neuroticism": "N"}  # fmt: skip


def _f(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(mean: dict[str, Any], sd: dict[str, Any], key: str, digits: int) -> str:
    """``mean ± sd`` of one metric (the mean alone when there is no spread)."""
    spread = sd.get(key)
    return _f(mean[key], digits) + ("" if spread is None else f" ± {_f(spread, digits)}")


def table(results: dict[str, Any], level: str) -> str:
    """One row per variant: the mean over its seeds (± the standard deviation for the means)."""
    head = ("| variant | " + " | ".join(f"{SHORT[t]} MSE" for t in TRAIT_NAMES) + " | MSE | "
            + " | ".join(f"{SHORT[t]} PCC" for t in TRAIT_NAMES) + " | PCC | "
            + " | ".join(f"{SHORT[t]} CCC" for t in TRAIT_NAMES) + " | CCC |")
    lines = [head, "|" + "---|" * (1 + 3 * 6)]
    for name, r in results.items():
        m, sd = r["test"][level], r.get("test_sd", {}).get(level, {})
        cells = [_f(m[f"{t}_mse"], 4) for t in TRAIT_NAMES] + [_pm(m, sd, "mean_mse", 4)]
        cells += [_f(m[f"{t}_pcc"]) for t in TRAIT_NAMES] + [_pm(m, sd, "mean_pcc", 3)]
        cells += [_f(m[f"{t}_ccc"]) for t in TRAIT_NAMES] + [_pm(m, sd, "mean_ccc", 3)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_table(results: dict[str, Any]) -> str:
    """Person-level mean PCC on val and test of every variant and seed."""
    seeds = sorted({s for r in results.values() for s in r["seeds"]}, key=int)
    lines = ["| variant | " + " | ".join(f"seed {s} val / test" for s in seeds) + " |",
             "|" + "---|" * (1 + len(seeds))]
    for name, r in results.items():
        cells = []
        for s in seeds:
            run = r["seeds"].get(s)
            cells.append("–" if run is None else f"{_f(run['val']['person']['mean_pcc'], 2)} / "
                                                 f"{_f(run['test']['person']['mean_pcc'], 2)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def aggregate(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every metric, per split and level."""
    first = next(iter(runs.values()))
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        out[split], out[f"{split}_sd"] = {}, {}
        for level, metrics in first[split].items():
            mean, sd = {}, {}
            for key in metrics:
                values = np.array([r[split][level][key] for r in runs.values()], dtype=float)
                mean[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
                sd[key] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 \
                    else math.nan  # fmt: skip
            out[split][level], out[f"{split}_sd"][level] = mean, sd
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default=str(ROOT / ".cache/world-default"))
    parser.add_argument("--runs", default=str(ROOT / ".cache/runs/personality-ablation"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/personality_ablation.json"))
    parser.add_argument("--steps", type=int, default=TrainPersonalityConfig.steps)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained side by side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--extra", action="store_true",
                        help="also the end-to-end and no-statistics-pooling rows")
    parser.add_argument("--only", help="variant names (as in the table) to run, separated by ;")
    args = parser.parse_args()
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if not seeds or args.jobs < 1:
        parser.error("give at least one seed and --jobs of at least 1")
    start = time.perf_counter()
    variants = {**VARIANTS, **(EXTRA if args.extra else {})}
    if args.only:
        wanted = [w.strip() for w in args.only.split(";")]
        unknown = [w for w in wanted if w not in {**VARIANTS, **EXTRA}]
        if unknown:
            parser.error(f"unknown variants {unknown}; known: {list({**VARIANTS, **EXTRA})}")
        variants = {w: {**VARIANTS, **EXTRA}[w] for w in wanted}
    jobs = {}
    for i, (name, overrides) in enumerate(variants.items()):
        for seed in seeds:
            run = Path(args.runs) / f"{i}-{overrides['variant']}-{len(overrides)}-seed{seed}"
            jobs[(name, seed)] = {"data_root": args.world, "out_dir": str(run),
                                  "steps": args.steps, "seed": seed, "device": args.device,
                                  "feature_cache": str(ROOT / ".cache/features-world-default"),
                                  **overrides}  # fmt: skip
    done = train_many([TrainPersonalityConfig(**job) for job in jobs.values()], args.jobs)
    summaries = dict(zip(jobs, done, strict=True))
    for key, s in summaries.items():
        print(f"{key[0]}, seed {key[1]}: val PCC {s['metrics']['val']['person']['mean_pcc']:.3f}")
    results: dict[str, Any] = {}
    for name, overrides in variants.items():
        runs = {str(seed): summaries[(name, seed)] for seed in seeds}
        per_seed = {s: {**r["metrics"], "seconds": r["seconds"],
                        "selected_step": r["selected_step"],
                        "reconstruction_val": r["reconstruction_val"]}
                    for s, r in runs.items()}  # fmt: skip
        results[name] = {**aggregate({s: r["metrics"] for s, r in runs.items()}),
                         "overrides": overrides, "seeds": per_seed,
                         "parameters": next(iter(runs.values()))["parameters"]}  # fmt: skip
    summary = summaries[next(iter(summaries))]
    mean_row = {"test": {"person": summary["metrics"]["test_mean_predictor"]}}
    report = {"steps": args.steps, "seeds": seeds, "world": args.world,
              "seconds": round(time.perf_counter() - start, 1), "jobs": args.jobs,
              "samples": summary["samples"], "variants": results,
              "mean_predictor": mean_row["test"]["person"], "torch_threads": 1}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    n = summary["samples"]["test"]["persons"]
    print(f"test persons, person level (N = {n}), mean over seeds {seeds} (± s.d.):")
    print(table({**results, "mean of the train traits": mean_row}, "person"))
    print(f"\ntest clips, one 10-s crop each (N = {summary['samples']['test']['clips']}):")
    print(table(results, "clip"))
    print("\nmean PCC per seed (person level), val / test:")
    print(seed_table(results))
    print(f"\n{report['seconds']:.0f} s in all; {out}")


if __name__ == "__main__":
    main()
