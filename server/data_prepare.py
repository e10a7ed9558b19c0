"""``rapport data prepare``: a REACT tree re-extracted with our perception path, so that training
on real data sees the features the live service computes.

For each split with a pairs csv, every clip it references (speakers and listeners, once each)
becomes, under ``out/<split>/``:

- ``3D_FV_files/<clip>.npy``: ``(T, 58)`` float32 in our space. Default mode ``perception``: the
  clip's video (``Video_files/<clip>.mp4``, or the PNG folder ``<clip>/1.png ..`` at 25 fps) runs
  through exactly :func:`server.perception.files.extract_face` (two-pass offline PFL); frames
  without a face are neutral zeros and ``<clip>.found.npy`` (``(T,)`` bool) marks the frames
  that had one (the loader reads it into ``Clip.found``). Mode ``dataset-3dmm``: the release's own
  FaceVerse coefficients mapped by a :class:`~models.data.faceverse.FaceVerseMapping` (or copied,
  if the source tree is already in our space); no ``found`` file.
- ``Emotion/<clip>.csv``: the 25-d view derived from those coefficients
  (:func:`models.data.emotion.emotion_from_coefficients`), so targets and generated reactions
  are scored alike; the release's own csv is kept in ``Emotion_release/<clip>.csv``.
- ``Audio_files/<clip>.wav``: copied unchanged (the loader resamples and computes features).
- ``Video_files/<clip>.mp4`` or ``<clip>/``: a symbolic link to the source video.

The pairs csv files, neighbour matrices, ``traits.csv`` and every other ``*.csv`` / ``*.npy`` at
the root are copied unchanged; ``rapport.json`` records space ``rapport58``, the source, the mode
and the date (``complete`` turns true once no clip failed). Every output is written under a
temporary name and renamed, so an interrupted run leaves no half file; a rerun skips clips whose
outputs exist and load. A clip that fails (no face in any frame, unreadable media) is recorded
with its error in ``prepare_report.json`` and the run goes on; pairs that use it then fail to
load until it is fixed or removed from the pairs csv.

Clips run in parallel in ``workers`` spawned processes, each with its own landmarkers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.data import react_layout as rl
from models.data.emotion import emotion_from_coefficients
from models.data.faceverse import FaceVerseMapping
from models.data.io import (
    DatasetError,
    found_path,
    read_coefficients,
    read_found,
    read_neighbours,
    read_pairs,
    save_npy_atomic,
    shown,
    write_emotion,
)
from models.face import layout
from server.perception.files import Video, extract_face
from server.perception.pfl import PflConfig
from server.perception.video import MediaError, PngFrames

log = logging.getLogger(__name__)

MODE_PERCEPTION = "perception"
MODE_DATASET_3DMM = "dataset-3dmm"
REPORT_FILE = "prepare_report.json"
RELEASE_EMOTION_DIR = "Emotion_release"


@dataclass(frozen=True)
class ClipJob:
    """Everything one worker needs to prepare one clip (picklable)."""

    split: str
    clip: str
    source: Path
    out: Path
    mode: str
    faceverse: FaceVerseMapping | None = None
    task_path: str | None = None
    pfl: PflConfig | None = None

    @property
    def name(self) -> str:
        return f"{self.split}/{self.clip}"


# -- one clip --------------------------------------------------------------------------------------


def _source_video(paths: rl.SplitPaths, clip: str) -> Video:
    if paths.video_file(clip).is_file():
        return paths.video_file(clip)
    if paths.video_frames_dir(clip).is_dir():
        return PngFrames(paths.video_frames_dir(clip))
    raise MediaError(f"{shown(paths.video_file(clip), paths.root)}: no such file (nor a folder "
                     "of PNG frames)")  # fmt: skip


def _coefficients(job: ClipJob) -> tuple[np.ndarray, np.ndarray | None]:
    src = rl.SplitPaths(job.source, job.split)
    if job.mode == MODE_PERCEPTION:
        coeffs, found, _, _ = extract_face(_source_video(src, job.clip), job.pfl,
                                           task_path=job.task_path)  # fmt: skip
        return coeffs, found
    path = src.coeffs(job.clip)
    raw = read_coefficients(path, job.source)
    if job.faceverse is not None:
        return job.faceverse.to_rapport(raw, name=shown(path, job.source)), None
    try:
        return layout.validate(raw, name=shown(path, job.source)), None
    except ValueError as err:
        raise DatasetError(str(err)) from err


def _is_done(job: ClipJob) -> bool:
    """Whether the clip's outputs exist and load (what a rerun may skip)."""
    out = rl.SplitPaths(job.out, job.split)
    path = out.coeffs(job.clip)
    try:
        frames = len(read_coefficients(path))
        if job.mode == MODE_PERCEPTION and read_found(path, frames) is None:
            return False
    except DatasetError:
        return False
    wav = rl.SplitPaths(job.source, job.split).audio(job.clip)
    return out.emotion(job.clip).is_file() and (not wav.is_file() or out.audio(job.clip).is_file())


def _tmp(path: Path) -> Path:
    """A temporary name beside ``path`` (renamed over it once complete)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(dst)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _link_video(job: ClipJob) -> None:
    src = rl.SplitPaths(job.source, job.split)
    out = rl.SplitPaths(job.out, job.split)
    for source, target in (
        (src.video_file(job.clip), out.video_file(job.clip)),
        (src.video_frames_dir(job.clip), out.video_frames_dir(job.clip)),
    ):
        if source.exists() and not target.is_symlink() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp(target)
            try:
                tmp.symlink_to(source.resolve(), target_is_directory=source.is_dir())
                os.replace(tmp, target)
            except OSError as err:  # e.g. a file system without symbolic links
                log.warning("%s: video not linked (%s)", job.name, err)


def _write_clip(job: ClipJob, coeffs: np.ndarray, found: np.ndarray | None) -> None:
    src = rl.SplitPaths(job.source, job.split)
    out = rl.SplitPaths(job.out, job.split)
    for path in (out.coeffs(job.clip), out.emotion(job.clip)):
        path.parent.mkdir(parents=True, exist_ok=True)
    out.coeffs(job.clip).unlink(missing_ok=True)  # present again only once all else is written
    write_emotion(_tmp(out.emotion(job.clip)), emotion_from_coefficients(coeffs))
    os.replace(_tmp(out.emotion(job.clip)), out.emotion(job.clip))
    release_emotion = src.emotion(job.clip)
    if release_emotion.is_file():
        _copy_atomic(release_emotion, out.base / RELEASE_EMOTION_DIR / f"{job.clip}.csv")
    if src.audio(job.clip).is_file():
        _copy_atomic(src.audio(job.clip), out.audio(job.clip))
    if found is not None:
        save_npy_atomic(found_path(out.coeffs(job.clip)), found.astype(bool))
    save_npy_atomic(out.coeffs(job.clip), coeffs.astype(np.float32))  # last: marks the clip done
    _link_video(job)


def prepare_clip(job: ClipJob, *, resume: bool = True) -> dict:
    """Prepare one clip; returns its record (``status`` prepared, skipped or failed)."""
    record: dict = {"split": job.split, "clip": job.clip}
    if resume and _is_done(job):
        return {**record, "status": "skipped"}
    start = time.perf_counter()
    try:
        coeffs, found = _coefficients(job)
        _write_clip(job, coeffs, found)
    except (MediaError, DatasetError, OSError) as err:
        return {**record, "status": "failed", "error": f"{type(err).__name__}: {err}"}
    record.update(status="prepared", frames=len(coeffs),
                  seconds=round(time.perf_counter() - start, 3))  # fmt: skip
    if found is not None:
        record["face_found"] = round(float(found.mean()), 4)
    return record


# -- the tree --------------------------------------------------------------------------------------


def _jobs(source: Path, out: Path, mode: str, faceverse: FaceVerseMapping | None,
          task_path: str | None, pfl: PflConfig | None) -> list[ClipJob]:  # fmt: skip
    jobs: list[ClipJob] = []
    for split in rl.SPLITS:
        paths = rl.SplitPaths(source, split)
        if not paths.pairs_csv.is_file():
            continue
        clips: dict[str, None] = {}
        for row in read_pairs(paths.pairs_csv, source):
            clips.update({row.speaker: None, row.listener: None})
        jobs += [ClipJob(split, clip, source, out, mode, faceverse, task_path, pfl)
                 for clip in clips]  # fmt: skip
    if not jobs:
        raise DatasetError(f"{source}: no pairs csv ({', '.join(s + '.csv' for s in rl.SPLITS)})")
    return jobs


def _copy_tables(source: Path, out: Path) -> list[str]:
    copied = []
    for path in sorted(source.iterdir()):
        if path.is_file() and path.suffix.lower() in (".csv", ".npy"):
            _copy_atomic(path, out / path.name)
            copied.append(path.name)
    return copied


def _drop_failed_pairs(out: Path, failures: list[dict]) -> dict[str, list[int]]:
    """Rewrite the copied pairs csv and neighbour matrix of each split without the pairs that
    reference a failed clip, so the prepared tree loads; returns the dropped csv rows."""
    dropped: dict[str, list[int]] = {}
    for split in rl.SPLITS:
        bad = {r["clip"] for r in failures if r["split"] == split}
        paths = rl.SplitPaths(out, split)
        if not bad or not paths.pairs_csv.is_file():
            continue
        pairs = read_pairs(paths.pairs_csv, out)
        keep = [i for i, p in enumerate(pairs) if p.speaker not in bad and p.listener not in bad]
        dropped[split] = [pairs[i].row for i in range(len(pairs)) if i not in set(keep)]
        lines = ["index,speaker,listener"]
        lines += [f"{n},{pairs[i].speaker},{pairs[i].listener}" for n, i in enumerate(keep)]
        tmp = _tmp(paths.pairs_csv)
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, paths.pairs_csv)
        if paths.neighbours.is_file():
            full = read_neighbours(paths.neighbours, 2 * len(pairs), out)
            if full is not None:
                p = len(pairs)
                idx = np.array(keep + [p + i for i in keep], dtype=np.int64)
                save_npy_atomic(paths.neighbours, full[np.ix_(idx, idx)])
        log.warning("%s: dropped %d pairs that reference clips that failed", split,
                    len(dropped[split]))  # fmt: skip
    return dropped


def _start_meta(source: Path, out: Path, mode: str) -> dict:
    meta_path = out / rl.META_FILE
    if meta_path.is_file():
        previous = rl.read_meta(out)
        if previous.get("mode") != mode or previous.get("source") != str(source):
            what = (f"a {previous['mode']!r} preparation of {previous.get('source')!r}"
                    if "mode" in previous else "another tree")  # fmt: skip
            raise DatasetError(f"{meta_path}: this folder holds {what}; asked for {mode!r} of "
                               f"{str(source)!r}: use another --out")  # fmt: skip
    meta = {"space": rl.SPACE_RAPPORT, "source": str(source), "mode": mode,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "fps": layout.FPS,
            "complete": False}  # fmt: skip
    rl.write_meta(out, meta)
    return meta


def _run(jobs: list[ClipJob], workers: int, resume: bool, progress: bool) -> Iterable[dict]:
    """The record of every job: skipped ones at once, the rest serially or in a process pool."""
    with tqdm(total=len(jobs), unit="clip", desc="prepare", disable=not progress) as bar:
        todo = []
        for job in jobs:
            if resume and _is_done(job):
                yield {"split": job.split, "clip": job.clip, "status": "skipped"}
                bar.update()
            else:
                todo.append(job)
        if workers <= 1 or len(todo) <= 1:
            for job in todo:
                yield prepare_clip(job, resume=False)
                bar.update()
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(prepare_clip, job, resume=False): job for job in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    yield future.result()
                except BrokenProcessPool as err:
                    raise RuntimeError(
                        f"a worker process died while preparing {job.name}; "
                        "rerun to resume (finished clips are kept)"
                    ) from err
                except Exception as err:  # one clip's unexpected error must not stop the rest
                    log.error("%s failed: %r", job.name, err)
                    yield {"split": job.split, "clip": job.clip, "status": "failed",
                           "error": f"{type(err).__name__}: {err}"}  # fmt: skip
                bar.update()


def prepare_tree(react_root: str | Path, out: str | Path, *, use_dataset_3dmm: bool = False,
                 faceverse: FaceVerseMapping | None = None, workers: int = 2,
                 resume: bool = True, progress: bool = True, task_path: str | Path | None = None,
                 pfl: PflConfig | None = None) -> dict:  # fmt: skip
    """Prepare ``react_root`` into ``out`` (see the module docstring); returns the summary that
    is also written to ``out/prepare_report.json`` (with one record per clip)."""
    source, out = Path(react_root).resolve(), Path(out).resolve()
    if not source.is_dir():
        raise DatasetError(f"{source}: no such folder")
    if out == source:
        raise DatasetError(f"{out}: the output folder must differ from the source tree")
    mode = MODE_DATASET_3DMM if use_dataset_3dmm else MODE_PERCEPTION
    space = rl.read_meta(source)["space"]
    if use_dataset_3dmm and space == rl.SPACE_FACEVERSE and faceverse is None:
        raise DatasetError(
            f"{source}: --use-dataset-3dmm on FaceVerse coefficients needs the "
            "expression name list (and the mean face if they are mean-subtracted)"
        )
    mapping = faceverse if use_dataset_3dmm and space == rl.SPACE_FACEVERSE else None
    jobs = _jobs(source, out, mode, mapping, str(task_path) if task_path else None, pfl)
    out.mkdir(parents=True, exist_ok=True)
    meta = _start_meta(source, out, mode)
    tables = _copy_tables(source, out)
    start = time.perf_counter()
    records = sorted(_run(jobs, workers, resume, progress), key=lambda r: (r["split"], r["clip"]))
    failures = [r for r in records if r["status"] == "failed"]
    for r in failures:
        log.warning("%s/%s: %s", r["split"], r["clip"], r["error"])
    dropped = _drop_failed_pairs(out, failures)
    summary = {
        "out": str(out), "source": str(source), "mode": mode, "clips": len(records),
        **{s: sum(r["status"] == s for r in records) for s in ("prepared", "skipped", "failed")},
        "failures": failures, "dropped_pairs": dropped, "tables": tables,
        "seconds": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    report = out / REPORT_FILE
    _tmp(report).write_text(json.dumps({**summary, "records": records}, indent=2))
    os.replace(_tmp(report), report)
    rl.write_meta(out, {**meta, "complete": not failures})
    return summary
