"""Appropriateness, diversity and smoothness of the generator on the synthetic test split.

Every model is scored in one run, side by side with the naive baselines, on the same samples:

- **official neighbours** (``neighbour_emotion_test.npy``: the other listeners' reactions to the
  same script count as appropriate): random, mime, mean, nearest, the generic generator with and
  without PosNet, and the personalised generator (+ PosNet: the enrolment's shifts, resting
  face and expressivity gain);
- **own-listener neighbours** (the person-specific set: the only appropriate reaction is the
  listener's own, as each script is heard once by each listener): generic vs personalised, and
  the enrolment's parts alone (shifts only, resting face only, resting face + expressivity
  gain), all directions and the listening direction alone. Test
  listeners are never seen in training; each is enrolled from a random 10-s crop of *another* of
  its clips;
- **listening direction**: the official scores restricted to the non-mirrored half of the
  samples, where the model reacts as the world's listener to its speaker (the product's use; the
  mirrored half asks for the talking partner's face from the quiet one's);
- **smoothness**: the pose's seam/inside velocity ratio of the generic stream without and with
  PosNet (:func:`models.metrics.smoothness.seam_jumps`), and the expression's
  (:func:`models.metrics.smoothness.expression_seam_velocity`);
- **feedback**: the generic generator with feedback on (each window fed back as the next one's
  previous frames) beside the checkpoint's default, when that default is off.

The official metric scale is kept (FRCorr, FRDist summed over the K predictions). Prints a table
and writes ``benchmarks/results/generator_quality.json``.

Usage: python benchmarks/generator_quality.py [--world DIR] [--weights DIR] [--limit N]
                                              [--k 10] [--workers 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from models.baselines import NAMES, Baseline, BaselineConfig
from models.data import react_layout as rl
from models.data.dataset import ReactDataset
from models.evaluation import collect, own_listener_scores, score
from models.generator.checkpoint import load_generator
from models.generator.predict import GeneratorPredictor, enrolment_predictors
from models.metrics.bootstrap import paired_difference
from models.metrics.smoothness import expression_seam_velocity, seam_jumps
from models.personal.checkpoint import load_personal
from models.personal.enrolment import enrolments_of
from models.posnet.model import load_posnet

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("FRCorr", "FRDist", "FRCorr_58", "FRDist_58", "FRDiv", "FRDvs", "FRVar", "FRSyn")


def paired_against_generic(collected: dict, names: list[str], clusters: np.ndarray,
                           seed: int) -> dict:  # fmt: skip
    """Each row minus ``generic + PosNet`` on own-listener neighbours, per sample, with a
    95 % bootstrap interval over listeners (FRCorr: > 0 is better; FRDist: < 0 is better)."""
    base = own_listener_scores(collected["generic + PosNet"]["predictions"],
                               collected["generic + PosNet"]["listeners"])
    out = {}
    for name in names:
        row = own_listener_scores(collected[name]["predictions"], collected[name]["listeners"])
        out[name] = {key: paired_difference(row[key], base[key], clusters, seed=seed)
                     for key in base}  # fmt: skip
    return out


def table(rows: dict[str, dict], keys: tuple[str, ...] = KEYS) -> str:
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default=str(ROOT / ".cache/world-default"))
    ap.add_argument("--weights", default=str(ROOT / "models/weights"))
    ap.add_argument("--limit", type=int, help="score only the first N test samples")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/generator_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.workers))
    weights = Path(args.weights)
    test = ReactDataset(args.world, "test", cache_clips=512)
    n = len(test) if args.limit is None else min(args.limit, len(test))
    idx = list(range(n))
    official = test.neighbours[np.ix_(idx, idx)]
    own = np.eye(n, dtype=bool)
    model, meta = load_generator(weights / "generator.safetensors")
    posnet = load_posnet(weights / "posnet.safetensors")
    style, hyper, _ = load_personal(weights / "personal.safetensors")
    if hyper is None:
        raise SystemExit(f"{weights / 'personal.safetensors'}: holds no hypernetwork (train "
                         "shifts first)")  # fmt: skip
    parts = enrolment_predictors(model, posnet, enrolments_of(test, style, hyper, seed=args.seed),
                                 k=args.k)  # fmt: skip

    predictors: dict[str, object] = {}
    if not args.skip_baselines:
        train = ReactDataset(args.world, "train")
        base_cfg = BaselineConfig(k=args.k, seed=args.seed)
        for name in NAMES:
            predictors[name] = Baseline(name, train, base_cfg).predict
    predictors["generic"] = GeneratorPredictor(model, None, k=args.k)
    predictors["generic + PosNet"] = GeneratorPredictor(model, posnet, k=args.k)
    if not model.config.sample_feedback:
        predictors["generic + PosNet, feedback on"] = GeneratorPredictor(model, posnet, k=args.k,
                                                                         feedback=True)
    predictors["personalised + PosNet"] = parts.pop("personalised")
    # the parts of the enrolment alone, scored on own-listener neighbours only
    own_only = {f"{name} + PosNet": predictor for name, predictor in parts.items()}
    start = time.perf_counter()
    results: dict[str, dict] = {"official": {}, "listening": {}, "own_listener": {},
                                "own_listener_listening": {}, "smoothness": {}}  # fmt: skip
    listening = [j for j, i in enumerate(idx) if not test[i].mirrored]
    collected = {}
    for name, predictor in predictors.items():
        print(f"-- {name}", flush=True)
        collected[name] = collect(test, predictor, seed=args.seed, indices=idx, progress=False)
        results["official"][name] = score(collected[name], official, workers=args.workers)
        print({key: round(results["official"][name][key], 4) for key in KEYS}, flush=True)
        half = {k: (v[listening] if isinstance(v, np.ndarray) else v)
                for k, v in collected[name].items()}  # fmt: skip
        results["listening"][name] = score(half, official[np.ix_(listening, listening)],
                                           workers=args.workers)  # fmt: skip
    for name, predictor in own_only.items():
        print(f"-- {name}", flush=True)
        collected[name] = collect(test, predictor, seed=args.seed, indices=idx, progress=False)
    for name in ("generic + PosNet", *own_only, "personalised + PosNet"):
        results["own_listener"][name] = score(collected[name], own, workers=args.workers)
        half = {k: (v[listening] if isinstance(v, np.ndarray) else v)
                for k, v in collected[name].items()}  # fmt: skip
        results["own_listener_listening"][name] = score(
            half, own[np.ix_(listening, listening)], workers=args.workers)
    listener_of = np.array([rl.person_id(test.pair_clips(i)[1]) for i in idx])
    results["own_listener_paired"] = paired_against_generic(
        collected, [*own_only, "personalised + PosNet"], listener_of, args.seed)
    for name in ("generic", "generic + PosNet", "generic + PosNet, feedback on",
                 "personalised + PosNet"):
        if name in collected:
            preds = collected[name]["predictions"]
            results["smoothness"][name] = {
                **seam_jumps(preds, model.config.window)["pose"],
                "expression": expression_seam_velocity(preds, model.config.window)}
    raw, smooth = (results["smoothness"][k]["velocity_seam"] for k in ("generic",
                                                                        "generic + PosNet"))
    results["smoothness"]["seam_jump_cut"] = raw / smooth
    results["meta"] = {"samples": n, "k": args.k, "world": args.world, "seed": args.seed,
                       "generator_extra": {k: meta["extra"].get(k) for k in ("step", "seed")},
                       "sampler": {"steps": model.config.sample_steps,
                                   "guidance": model.config.sample_guidance,
                                   "feedback": model.config.sample_feedback},
                       "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    print("\nofficial neighbours (REACT protocol):")
    print(table(results["official"]))
    print(f"\nlistening direction only ({len(listening)} samples):")
    print(table(results["listening"]))
    print("\nown-listener neighbours (personalised appropriateness):")
    print(table(results["own_listener"]))
    print("\nown-listener neighbours, listening direction only:")
    print(table(results["own_listener_listening"]))
    print("\nown-listener neighbours, minus generic + PosNet per sample (95 % interval over the "
          f"{len(set(listener_of))} listeners' samples resampled by listener):")
    for name, r in results["own_listener_paired"].items():
        print(f"  {name}: " + "; ".join(
            f"{key} {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], "
            f"better for {d['clusters_above'] if key == 'FRCorr' else d['clusters_below']} "
            f"of {d['clusters']} listeners" for key, d in r.items()))
    s = results["smoothness"]
    print(f"\nPosNet: pose velocity at seams {s['generic']['velocity_seam']:.4f} -> "
          f"{s['generic + PosNet']['velocity_seam']:.4f} ({s['seam_jump_cut']:.1f}x cut); "
          f"seam/inside ratio {s['generic']['velocity_ratio']:.2f} -> "
          f"{s['generic + PosNet']['velocity_ratio']:.2f}")  # fmt: skip
    for name, r in s.items():
        if isinstance(r, dict):
            print(f"{name}: expression seam/inside velocity ratio "
                  f"{r['expression']['velocity_ratio']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
