"""Does personalisation help on many more unseen listeners? Own-listener scores on a fresh world.

The default world's test split has 14 persons, too few to tell a small personalisation effect
from the spread between persons (``generator_quality.py``'s paired intervals). This benchmark
scores the bundled generic and personalised generators on a *fresh* synthetic world, generated
with another seed, whose every person (listener and speaker, every split) is new: nothing of it
was seen in training, sampler tuning or model selection.

For each sample, the generated reactions (``k`` per sample, PosNet on) are scored against the
sample's own real reaction only (the person-specific neighbour set, as ``generator_quality.py``
does); each listener is enrolled from a random 10-s crop of *another* of its clips. Rows: the
generic generator, the full enrolment (shifts + resting face + expressivity gain, the
expressivity multiplied by the generator's shift spread gain), the same without that gain
(when the generator has one) and the enrolment's parts (``--parts``). Each row is paired with
the generic one sample by sample, with a 95 % interval from resampling persons (cluster
bootstrap), overall and for the listening direction alone.

Writes ``benchmarks/results/personalisation_fresh.json`` and prints a table.

Usage: python benchmarks/personalisation_fresh.py --world DIR [--splits train,val,test]
                                                  [--k 10] [--parts] [--limit N] [--out FILE]
Make the world first, e.g.
    rapport world make --out .cache/world-fresh1 --seed 1 --listeners 48 --clips-per-listener 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from models.data import react_layout as rl
from models.data.dataset import ReactDataset
from models.data.world.config import WorldConfig
from models.evaluation import collect, own_listener_scores
from models.generator.checkpoint import load_generator
from models.generator.predict import GeneratorPredictor, enrolment_predictors
from models.metrics.bootstrap import paired_difference
from models.personal.checkpoint import load_personal
from models.personal.enrolment import enrolments_of
from models.posnet.model import load_posnet

ROOT = Path(__file__).resolve().parents[1]
GENERIC = "generic + PosNet"
FULL = "personalised + PosNet"
UNCOMPENSATED = "personalised + PosNet, no shift spread gain"


def world_seed(world: Path) -> int:
    """The seed the world at ``world`` was made with (its ``rapport.json``)."""
    try:
        return int(json.loads((world / "rapport.json").read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{world}: not a synthetic world ({exc})") from exc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True, help="a fresh world (not the training world)")
    ap.add_argument("--weights", default=str(ROOT / "models/weights"))
    ap.add_argument("--splits", default="train,val,test",
                    help="which of the fresh world's splits to score (all are unseen)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--parts", action="store_true",
                    help="also score the enrolment's parts (shifts, resting face, expressivity)")
    ap.add_argument("--limit", type=int, help="score only the first N samples of each split")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/personalisation_fresh.json"))
    args = ap.parse_args()
    world = Path(args.world)
    seed_of_world = world_seed(world)
    if seed_of_world == WorldConfig().seed:
        raise SystemExit(f"{world} has seed {seed_of_world}, the seed of the default world the "
                         "bundled weights are trained on: make a fresh world with another seed")
    if args.k < 1:
        raise SystemExit("--k must be at least 1")
    torch.set_num_threads(max(1, args.workers))
    weights = Path(args.weights)
    model, _ = load_generator(weights / "generator.safetensors")
    uncompensated, _ = load_generator(weights / "generator.safetensors")
    uncompensated.config = dataclasses.replace(model.config, shift_spread_gain=None)
    posnet = load_posnet(weights / "posnet.safetensors")
    style, hyper, _ = load_personal(weights / "personal.safetensors")
    if hyper is None:
        raise SystemExit("personal.safetensors holds no hypernetwork (train shifts first)")

    start = time.perf_counter()
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    persons: list[np.ndarray] = []
    listening: list[np.ndarray] = []
    counts = {}
    for split in args.splits.split(","):
        data = ReactDataset(world, split, cache_clips=512)
        n = len(data) if args.limit is None else min(args.limit, len(data))
        idx = list(range(n))
        enrolment_of = enrolments_of(data, style, hyper, seed=args.seed)
        parts = enrolment_predictors(model, posnet, enrolment_of, k=args.k)
        rows = {GENERIC: GeneratorPredictor(model, posnet, k=args.k),
                FULL: parts.pop("personalised")}
        if model.config.shift_spread_gain is not None:  # the same enrolment without it
            rows[UNCOMPENSATED] = enrolment_predictors(uncompensated, posnet, enrolment_of,
                                                       k=args.k)["personalised"]  # fmt: skip
        if args.parts:
            rows.update({f"{name} + PosNet": predictor for name, predictor in parts.items()})
        for name, predictor in rows.items():
            t0 = time.perf_counter()
            got = collect(data, predictor, seed=args.seed, indices=idx, progress=False)
            row = own_listener_scores(got["predictions"], got["listeners"])
            for key, value in row.items():
                scores.setdefault(name, {}).setdefault(key, []).append(value)
            print(f"{split} {name}: FRCorr {row['FRCorr'].mean():.4f}  FRDist "
                  f"{row['FRDist'].mean():.2f}  ({n} samples, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        persons.append(np.array([f"{split}:{rl.person_id(data.pair_clips(i)[1])}"
                                 for i in idx]))  # fmt: skip
        listening.append(np.array([not data[i].mirrored for i in idx]))
        counts[split] = n

    clusters = np.concatenate(persons)
    heard = np.concatenate(listening)
    if len(set(clusters)) < 2 or len(set(clusters[heard])) < 2:
        raise SystemExit(f"{len(set(clusters))} persons scored: the paired intervals need at "
                         "least two, in both directions (raise --limit)")  # fmt: skip
    flat = {name: {key: np.concatenate(v) for key, v in row.items()}
            for name, row in scores.items()}  # fmt: skip
    results: dict = {"rows": {}, "paired": {}, "paired_listening": {}}
    for name, row in flat.items():
        results["rows"][name] = {
            **{key: float(v.mean()) for key, v in row.items()},
            **{f"{key}_listening": float(v[heard].mean()) for key, v in row.items()}}
        if name == GENERIC:
            continue
        base = flat[GENERIC]
        results["paired"][name] = {key: paired_difference(row[key], base[key], clusters,
                                                          seed=args.seed)
                                   for key in row}  # fmt: skip
        results["paired_listening"][name] = {
            key: paired_difference(row[key][heard], base[key][heard], clusters[heard],
                                   seed=args.seed)
            for key in row}  # fmt: skip
    results["meta"] = {"world": str(world), "world_seed": seed_of_world, "splits": counts,
                       "samples": int(len(clusters)), "persons": int(len(set(clusters))),
                       "k": args.k, "seed": args.seed,
                       "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip

    print(f"\nown-listener neighbours, {len(clusters)} samples of {len(set(clusters))} unseen "
          f"persons (world seed {seed_of_world}):")
    print("| model | FRCorr ↑ | FRDist ↓ | listening FRCorr / FRDist |")
    print("|---|---|---|---|")
    for name, r in results["rows"].items():
        print(f"| {name} | {r['FRCorr']:.3f} | {r['FRDist']:.1f} | "
              f"{r['FRCorr_listening']:.3f} / {r['FRDist_listening']:.1f} |")
    for label, part in (("all", "paired"), ("listening", "paired_listening")):
        print(f"\nminus {GENERIC}, per sample, 95 % interval over persons ({label}):")
        for name, r in results[part].items():
            print(f"  {name}: " + "; ".join(
                f"{key} {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], better for "
                f"{d['clusters_above'] if key == 'FRCorr' else d['clusters_below']} of "
                f"{d['clusters']}" for key, d in r.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
