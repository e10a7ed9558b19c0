"""Fit the renderable face's morph targets from real video: landmarker in, ``face_model.npz`` out.

Runs MediaPipe FaceLandmarker over each clip, aligns every frame's 468 landmarks to the canonical
mesh (weighted similarity Procrustes, :mod:`models.face.mesh`), and hands the aligned points and
blendshape scores to :func:`models.face.morph_fit.fit_morph_targets`. The shipped model is made by
``rapport face fit --media .cache/media --out models/face/assets/face_model.npz``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from models.face.face_model import FIT_COMMAND
from models.face.mesh import CanonicalMesh, align_to_canonical, load_canonical_mesh
from models.face.mesh import observation_points as to_points
from models.face.morph_fit import Sample, fit_morph_targets
from server.perception.landmarker import FaceLandmarker

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class ClipStats:
    """What happened to one clip: frames decoded, looked at (after stride/limits), with a face."""

    name: str
    decoded: int
    processed: int
    with_face: int


def find_clips(media_dir: str | Path) -> list[Path]:
    """The video files directly inside ``media_dir``, sorted by name."""
    root = Path(media_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"media folder {root} does not exist")
    clips = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {root}")
    return clips


def _collect_clip(
    path: Path,
    landmarker: FaceLandmarker,
    mesh: CanonicalMesh,
    *,
    stride: int,
    max_frames: int | None,
    start_fraction: float,
    progress: bool,
) -> tuple[Sample, ClipStats]:
    """Aligned points and scores of the frames of one clip that show a face."""
    points: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    decoded = processed = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames or None
        first = int(start_fraction * total) if total else 0
        bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress, leave=False)
        for frame in container.decode(stream):
            index = decoded
            decoded += 1
            bar.update(1)
            if index < first or (index - first) % stride:
                continue
            if max_frames is not None and processed >= max_frames:
                break
            processed += 1
            rate = float(stream.average_rate or 25)
            seconds = float(frame.pts * stream.time_base) if frame.pts is not None else index / rate
            obs = landmarker.detect(frame.to_ndarray(format="rgb24"), int(round(seconds * 1000)))
            if obs is None:
                continue
            points.append(to_points(obs.landmarks, obs.image_size))
            scores.append(obs.blendshapes)
        bar.close()
    stats = ClipStats(path.name, decoded, processed, len(points))
    if not points:
        raise RuntimeError(f"no face found in any of {processed} frames of {path}")
    if stats.with_face < processed:
        log.info("%s: no face in %d of %d frames", path.name, processed - len(points), processed)
    aligned, _, _, _ = align_to_canonical(np.stack(points), mesh)  # (T, 468, 3)
    return (aligned.astype(np.float32), np.stack(scores).astype(np.float32)), stats


def _collect(
    video_paths: Sequence[str | Path],
    task_path: str | Path | None,
    stride: int,
    max_frames: int | None,
    start_fraction: float,
    progress: bool,
) -> tuple[list[Sample], list[ClipStats]]:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not 0.0 <= start_fraction < 1.0:
        raise ValueError(f"start_fraction must be in [0, 1), got {start_fraction}")
    mesh = load_canonical_mesh(task_path)
    samples, stats = [], []
    for path in map(Path, video_paths):
        if not path.is_file():
            raise FileNotFoundError(f"video {path} does not exist")
        # A fresh landmarker per clip: video mode tracks across frames and needs rising times.
        with FaceLandmarker(task_path, video=True) as landmarker:
            sample, stat = _collect_clip(
                path, landmarker, mesh, stride=stride, max_frames=max_frames,
                start_fraction=start_fraction, progress=progress,
            )  # fmt: skip
        samples.append(sample)
        stats.append(stat)
    return samples, stats


def collect_samples(
    video_paths: Sequence[str | Path],
    task_path: str | Path | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    progress: bool = True,
    *,
    start_fraction: float = 0.0,
) -> list[Sample]:
    """Per clip: aligned landmarks ``(T, 468, 3)`` (canonical cm) and scores ``(T, 51)``.

    Every ``stride``-th frame from ``start_fraction`` of the clip on is run through the
    landmarker (video mode, timestamps from the frame pts), at most ``max_frames`` per clip;
    frames without a face are skipped.
    """
    samples, _ = _collect(video_paths, task_path, stride, max_frames, start_fraction, progress)
    return samples


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HELD_OUT_KEYS = (
    "frames_heldout",
    "heldout_neutral_rmse_cm",
    "heldout_morph_rmse_cm",
    "heldout_neutral_rmse_mm",
    "heldout_morph_rmse_mm",
    "heldout_improvement",
)


def _provenance(
    report: dict[str, Any],
    stats: Sequence[ClipStats],
    paths: Sequence[Path],
    *,
    command: str,
    seed: int,
    stride: int,
    max_frames: int | None,
) -> dict[str, Any]:
    """The record stored in the model file: command, inputs (with hashes), settings, errors."""
    symmetry = report["symmetry"]
    return {
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "stride": stride,
        "max_frames": max_frames,
        "clips": [
            {**dataclasses.asdict(s), "sha256": _sha256(p)}
            for s, p in zip(stats, paths, strict=True)
        ],
        "frames_used": report["frames_total"],
        "ridge": report["ridge"],
        "ridge_rule": report["ridge_rule"],
        "locality_strength": report["locality_strength"],
        "locality_half_width_cm": report["locality_half_width_cm"],
        "holdout_fraction": report["holdout_fraction"],
        "heldout": {k: report[k] for k in _HELD_OUT_KEYS},
        "locality_other_side_ratio": {
            "max": report["locality"]["other_side_ratio_max"],
            "median": report["locality"]["other_side_ratio_median"],
        },
        "symmetry_median": {
            "pairs": symmetry["pair_asymmetry_median"],
            "pair_sums": symmetry["pair_sum_asymmetry_median"],
            "singles": symmetry["single_asymmetry_median"],
        },
        "units": "cm (canonical MediaPipe mesh, x toward the subject's left, y up, z to camera)",
        "runtime_s": round(report["runtime_s"]["total"], 1),
    }


def fit_face_model(
    video_paths: Sequence[str | Path],
    out_path: str | Path,
    *,
    seed: int = 0,
    task_path: str | Path | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    ridge: float | None = None,
    holdout_fraction: float = 0.2,
    progress: bool = True,
    command: str = FIT_COMMAND,
) -> dict[str, Any]:
    """Collect samples, fit the morph targets, write ``out_path`` with provenance; the report.

    ``command`` is recorded as the command that made the file (the CLI passes its own). The fit is
    deterministic (closed-form ridge regression, contiguous hold-out); ``seed`` is recorded for
    completeness only.
    """
    start = time.perf_counter()
    paths = [Path(p) for p in video_paths]
    samples, stats = _collect(paths, task_path, stride, max_frames, 0.0, progress)
    collected = time.perf_counter() - start
    model, report = fit_morph_targets(
        samples, load_canonical_mesh(task_path), ridge=ridge, holdout_fraction=holdout_fraction
    )
    report["runtime_s"] = {"landmarks": collected, "total": time.perf_counter() - start}
    provenance = _provenance(report, stats, paths, command=command, seed=seed, stride=stride,
                             max_frames=max_frames)  # fmt: skip
    model = dataclasses.replace(model, provenance=provenance)
    model.save(out_path)
    report["provenance"] = provenance
    report["out_path"] = str(out_path)
    return report
