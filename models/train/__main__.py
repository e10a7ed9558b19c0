"""Training command line: ``python -m models.train RECIPE`` (``generator``, ``style``, ``shifts``,
``posnet``, ``tune``, ``spread``, ``default``, ``personality``).

(``rapport train ...`` runs this module in a child process, so the serving code never imports
training code: ARCHITECTURE.md §8.)

Every recipe takes ``--data DIR --out DIR``, an optional ``--config FILE`` (JSON or TOML: keys
are the fields of the recipe's config dataclass; an unknown key is an error that lists the known
ones) and ``--set KEY=VALUE`` overrides (values parsed as JSON, else kept as strings). Flags win
over ``--set``, which wins over the file. ``default`` runs the whole pipeline that produces the
bundled weights (``models/weights``): generator, style encoder, shifts, PosNet, sampler tuning,
the population's expression spread and the shifts' spread gain.
``personality`` trains the personality model on the bundled generator and enrolment path;
with ``--install`` its checkpoint joins the bundled weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

from models.generator.config import GeneratorConfig
from models.personal.hyper import HyperConfig
from models.train.generator import TrainGeneratorConfig, config_json, train_generator
from models.train.personal import TrainShiftsConfig, TrainStyleConfig, train_shifts, train_style
from models.train.personality import (
    PERSONALITY_FILE,
    TrainPersonalityConfig,
    train_personality,
    train_personality_seeds,
)
from models.train.posnet import TrainPosNetConfig, train_posnet
from models.train.spread import SpreadConfig, measure_spread
from models.train.tune import TuneSamplerConfig, tune_sampler

log = logging.getLogger("models.train")

RECIPES = {
    "generator": (TrainGeneratorConfig, train_generator),
    "style": (TrainStyleConfig, train_style),
    "shifts": (TrainShiftsConfig, train_shifts),
    "posnet": (TrainPosNetConfig, train_posnet),
    "tune": (TuneSamplerConfig, tune_sampler),
    "spread": (SpreadConfig, measure_spread),
    "personality": (TrainPersonalityConfig, train_personality),
}

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
"""Where ``default --install`` copies the bundled weights."""

DEFAULT_PIPELINE: dict[str, dict[str, Any]] = {
    "generator": {"steps": 9000, "batch_size": 64, "lr": 5e-4, "warmup": 300,
                  "prev_noise": 1.0, "prev_drop": 0.2},
    "style": {"steps": 500},
    "shifts": {"steps": 1500},
    "posnet": {"steps": 1500},
    "tune": {},
    "spread": {},
}
"""The recipe settings of the bundled weights (everything else is the recipe's default)."""


def read_config_file(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: no such config file")
    text = p.read_text()
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"{path}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'} "
                         f"({err})") from err  # fmt: skip
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config must be an object of settings")
    return data


def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def build_config(recipe: str, values: dict[str, Any]) -> Any:
    """The recipe's config dataclass from ``values``; unknown keys are a ``ValueError``."""
    cls = RECIPES[recipe][0]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {recipe} config keys {unknown}; known: {sorted(known)}")
    values = dict(values)
    if isinstance(values.get("generator"), dict) and recipe == "generator":
        values["generator"] = GeneratorConfig.from_dict(values["generator"])
    if isinstance(values.get("hyper"), dict):
        hknown = {f.name for f in dataclasses.fields(HyperConfig)}
        if bad := sorted(set(values["hyper"]) - hknown):
            raise ValueError(f"unknown hyper config keys {bad}; known: {sorted(hknown)}")
        values["hyper"] = HyperConfig(**values["hyper"])
    if isinstance(values.get("shift_layers"), list):
        values["shift_layers"] = tuple(values["shift_layers"])
    try:
        return cls(**values)
    except TypeError as err:
        raise ValueError(f"{recipe} config: {err}") from err


def _stage(recipe: str, values: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Run one stage, or reuse its finished result: a stage folder whose ``summary.json`` was
    written by the same config is not run again (so an interrupted pipeline resumes)."""
    cfg = build_config(recipe, values)
    summary_path = Path(cfg.out_dir) / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        saved = dict(done.get("config") or {})
        if isinstance(saved.get("generator"), dict):  # fields added since get their defaults
            saved["generator"] = GeneratorConfig.from_dict(saved["generator"]).to_dict()
        same = json.loads(json.dumps(config_json(cfg))) == saved
        if same and done.get("finished", True):
            log.info("%s: already done in %s, reusing it", recipe, cfg.out_dir)
            return done
    return RECIPES[recipe][1](cfg, progress=progress)


def run_default(data: str, out: str, *, seed: int, device: str, install: bool, progress: bool,
                overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Generator → style → PosNet → sampler tuning → spread → shifts → the shifts' spread gain
    (``out/compensation``) into ``out/<recipe>``; with
    ``install`` the three weight files and ``training.json`` are copied into ``models/weights``.
    Finished stages are reused (see :func:`_stage`)."""
    root = Path(out)
    common = {"data_root": data, "seed": seed, "device": device}
    plan = {k: {**v, **overrides.get(k, {})} for k, v in DEFAULT_PIPELINE.items()}
    dirs = {k: root / k for k in RECIPES}
    generator = dirs["generator"] / "generator.safetensors"
    stages: dict[str, Any] = {}
    stages["generator"] = _stage("generator", {
        **common, "feature_cache": root / "features", **plan["generator"],
        "out_dir": dirs["generator"]}, progress)  # fmt: skip
    stages["style"] = _stage("style", {**common, **plan["style"], "out_dir": dirs["style"]},
                             progress)  # fmt: skip
    stages["posnet"] = _stage("posnet", {
        **common, **plan["posnet"], "out_dir": dirs["posnet"], "generator": generator}, progress)
    stages["tune"] = _stage("tune", {
        **common, **plan["tune"], "out_dir": dirs["tune"], "generator": generator}, progress)
    stages["spread"] = _stage("spread", {
        **common, **plan["spread"], "out_dir": dirs["spread"], "generator": generator}, progress)
    # after tuning: the shifts are trained in the regime the chosen sampler runs (with or
    # without the previous frames fed back, TrainShiftsConfig.prev_drop)
    stages["shifts"] = _stage("shifts", {
        **common, "feature_cache": root / "features", **plan["shifts"],
        "out_dir": dirs["shifts"], "generator": generator,
        "style": dirs["style"] / "personal.safetensors"}, progress)  # fmt: skip
    # after the shifts: how much they shrink the reaction, measured into the generator
    stages["compensation"] = _stage("spread", {
        **common, **plan["spread"], "out_dir": root / "compensation", "generator": generator,
        "personal": dirs["shifts"] / "personal.safetensors"}, progress)  # fmt: skip
    seconds = {k: round(float(v.get("seconds", 0.0)), 1) for k, v in stages.items()}
    report = {
        "command": "rapport train default " + " ".join(sys.argv[2:]),
        "seed": seed, "device": device, "seconds": round(sum(seconds.values()), 1),
        "stage_seconds": seconds,
        "generator": {k: stages["generator"][k] for k in ("steps", "final_loss_ema",
                                                           "parameters", "train_windows")},
        "style": stages["style"]["metrics"],
        "shifts": {**stages["shifts"]["metrics"],
                   "hyper_parameters": stages["shifts"]["hyper_parameters"],
                   "prev_drop": stages["shifts"]["prev_drop"]},
        "posnet": stages["posnet"]["val"],
        "sampler": stages["tune"]["chosen"], "sampler_grid": stages["tune"]["grid"],
        "expression_spread": stages["spread"]["expression_spread"],
        "shift_spread_gain": stages["compensation"]["shift_spread_gain"],
        "plan": plan,
    }  # fmt: skip
    (root / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    if install:
        DEFAULT_WEIGHTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(generator, DEFAULT_WEIGHTS / "generator.safetensors")
        shutil.copyfile(dirs["shifts"] / "personal.safetensors",
                        DEFAULT_WEIGHTS / "personal.safetensors")  # fmt: skip
        shutil.copyfile(dirs["posnet"] / "posnet.safetensors",
                        DEFAULT_WEIGHTS / "posnet.safetensors")  # fmt: skip
        shutil.copyfile(root / "training.json", DEFAULT_WEIGHTS / "training.json")
    return report


def _record(entries: dict[str, Any]) -> None:
    """Set top-level entries of the bundled weights' ``training.json`` (the rest is kept)."""
    record_path = DEFAULT_WEIGHTS / "training.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.update(entries)
    record_path.write_text(json.dumps(record, indent=2, default=float) + "\n")


def install_personality(summary: dict[str, Any], command: str) -> None:
    """Copy a personality run into the bundled weights and record it in ``training.json``."""
    DEFAULT_WEIGHTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(summary["model"], DEFAULT_WEIGHTS / PERSONALITY_FILE)
    keep = ("variant", "seed", "steps", "selected_step", "seconds", "train_seconds", "version",
            "parameters", "samples", "metrics", "reconstruction_val", "device", "seed_selection",
            "seconds_all_seeds")  # fmt: skip
    _record({"personality": {"command": command,
                             **{k: summary[k] for k in keep if k in summary}}})


def install_spread(summary: dict[str, Any], command: str) -> None:
    """Record a measurement of the bundled generator's population spread (and, when measured,
    the shifts' spread gain) in ``training.json``."""
    entries = {"expression_spread": {**summary["expression_spread"], "command": command,
                                     "seconds_taken": summary["seconds"]}}  # fmt: skip
    if "shift_spread_gain" in summary:
        entries["shift_spread_gain"] = {**summary["shift_spread_gain"], "command": command}
    _record(entries)


def install_shifts(summary: dict[str, Any], command: str) -> None:
    """Copy a hypernetwork trained on the bundled generator and style encoder into
    ``models/weights`` and record it in ``training.json``."""
    shutil.copyfile(summary["model"], DEFAULT_WEIGHTS / "personal.safetensors")
    _record({"shifts": {**summary["metrics"], "hyper_parameters": summary["hyper_parameters"],
                        "prev_drop": summary["prev_drop"]},
             "shifts_retrained": {"command": command, "seconds": summary["seconds"],
                                  "steps": summary["steps"], "seed": summary["seed"]}})


def install_tune(summary: dict[str, Any], command: str) -> None:
    """Record a retuning of the bundled generator's sampler in ``training.json``."""
    _record({"sampler": summary["chosen"], "sampler_grid": summary["grid"],
             "sampler_retuned": {"command": command, "seconds": summary["seconds"],
                                 "samples": summary["samples"]}})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="recipe", required=True)
    helps = {"generator": "the generic reaction generator (diffusion denoiser)",
             "style": "the style encoder (contrastive, over 10-s clips)",
             "shifts": "the hypernetwork's low-rank shifts (generator and style frozen)",
             "posnet": "PosNet on the frozen generator's output",
             "tune": "choose the live sampler's steps and guidance on the val split",
             "spread": "measure the train population's expression spread into a generator",
             "default": "the whole pipeline of the bundled weights",
             "personality": "the personality model (RPR), jointly with a copy of the "
                            "enrolment path"}  # fmt: skip
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--data", required=True, help="a REACT-layout tree (the synthetic world)")
        p.add_argument("--out", required=True, help="run folder")
        p.add_argument("--config", help="JSON or TOML file of config settings")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--seed", type=int)
        p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
        p.add_argument("--steps", type=int)
        p.add_argument("-q", "--quiet", action="store_true")
        if name in ("shifts", "posnet", "tune", "spread", "personality"):
            p.add_argument("--generator", help="generator checkpoint (frozen)")
        if name == "shifts":
            p.add_argument("--style", help="style checkpoint from the style recipe")
        if name == "spread":
            p.add_argument("--personal", help="also measure the spread gain of this style + "
                                              "hypernetwork checkpoint's shifts")  # fmt: skip
        if name == "personality":
            p.add_argument("--personal", help="style + hypernetwork checkpoint to start from")
            p.add_argument("--variant", help="full (default), matrix-no-edges, vector-gcn, direct")
            p.add_argument("--seeds", help="comma-separated seeds: train once per seed and keep "
                                           "the run with the best val CCC")  # fmt: skip
            p.add_argument("--jobs", type=int, default=1, help="runs side by side (--seeds)")
        if name in ("default", "personality"):
            p.add_argument("--install", action="store_true",
                           help="copy the results into models/weights (the bundled weights)")
        if name in ("tune", "spread"):
            p.add_argument("--install", action="store_true",
                           help="rewrite the bundled generator (models/weights) in place and "
                                "record the result in its training.json")  # fmt: skip
        if name == "shifts":
            p.add_argument("--install", action="store_true",
                           help="train on the bundled generator and style encoder, then replace "
                                "the bundled hypernetwork and record it in training.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        values = {**read_config_file(args.config), **parse_sets(args.set)}
        flags = {"seed": args.seed, "device": args.device, "steps": args.steps,
                 "generator": getattr(args, "generator", None),
                 "style": getattr(args, "style", None),
                 "personal": getattr(args, "personal", None),
                 "variant": getattr(args, "variant", None)}  # fmt: skip
        values.update({k: v for k, v in flags.items() if v is not None})
        if args.recipe == "default":
            unknown = sorted(set(values) - {"seed", "device", *DEFAULT_PIPELINE})
            if unknown:
                raise ValueError(f"unknown default config keys {unknown}; known: seed, device, "
                                 f"and one object per recipe {sorted(DEFAULT_PIPELINE)}")
            overrides = {k: v for k, v in values.items() if k in DEFAULT_PIPELINE}
            summary = run_default(args.data, args.out, seed=values.get("seed", 0),
                                  device=values.get("device", "auto"), install=args.install,
                                  progress=not args.quiet, overrides=overrides)  # fmt: skip
        else:
            values.update(data_root=args.data, out_dir=args.out)
            if args.recipe in ("tune", "spread") and args.install:
                bundled = DEFAULT_WEIGHTS / "generator.safetensors"
                given = values.setdefault("generator", str(bundled))
                if Path(given).resolve() != bundled.resolve():
                    raise ValueError(f"{args.recipe} --install rewrites the bundled generator "
                                     f"{bundled}; got --generator {given}")  # fmt: skip
            if args.recipe == "shifts" and args.install:
                for key, file in (("generator", "generator.safetensors"),
                                  ("style", "personal.safetensors")):
                    bundled = DEFAULT_WEIGHTS / file
                    given = values.setdefault(key, str(bundled))
                    if Path(given).resolve() != bundled.resolve():
                        raise ValueError(f"shifts --install trains on the bundled {key} "
                                         f"{bundled}; got --{key} {given}")  # fmt: skip
            if args.recipe in ("tune", "spread") and "generator" not in values:
                raise ValueError(f"{args.recipe}: give --generator CKPT (rewritten in place) or "
                                 "--install (the bundled generator)")  # fmt: skip
            cfg = build_config(args.recipe, values)
            seeds = getattr(args, "seeds", None)
            if seeds is not None and args.seed is not None:
                raise ValueError("give --seed or --seeds, not both")
            if seeds is None and getattr(args, "jobs", 1) != 1:
                raise ValueError("--jobs needs --seeds")
            if seeds is not None:
                try:
                    chosen = [int(x) for x in seeds.split(",") if x.strip()]
                except ValueError:
                    raise ValueError(f"--seeds: expected comma-separated integers, got "
                                     f"{seeds!r}") from None  # fmt: skip
                summary = train_personality_seeds(cfg, chosen, args.jobs)
            else:
                summary = RECIPES[args.recipe][1](cfg, progress=not args.quiet)
            words = sys.argv[1:] if argv is None else argv
            if args.recipe == "personality" and args.install:
                install_personality(summary, "rapport train " + " ".join(words))
            if args.recipe == "shifts" and args.install:
                install_shifts(summary, "rapport train " + " ".join(words))
            if args.recipe == "tune" and args.install:
                install_tune(summary, "rapport train " + " ".join(words))
            if args.recipe == "spread" and args.install:
                install_spread(summary, "rapport train " + " ".join(words))
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        log.error("%s", err)
        return 2
    keys = ("steps", "seconds", "seed", "metrics", "val", "final_loss_ema", "stage_seconds",
            "version")
    sys.stdout.write(json.dumps({k: summary[k] for k in keys if k in summary}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
