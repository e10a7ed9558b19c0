"""Readers (and the few writers) of the files of a REACT-layout tree, each validating what it reads.

Every problem is a :class:`DatasetError` whose message starts with the file and names the field,
row or frame that is wrong. ``row N`` is the file's N-th line (1-based, the header is row 1), as a
spreadsheet shows it. Paths are shown relative to the tree root when one is given.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile

from models.data import emotion as emo
from models.data.react_layout import TRAIT_NAMES, person_id
from models.face import layout
from models.features.mfcc import MfccConfig, mfcc_features, resample_to_16k, to_mono

log = logging.getLogger(__name__)

CLIP_EXTENSIONS = (".mp4", ".avi", ".wav", ".npy", ".csv")
"""Extensions stripped from clip paths in a pairs csv (the release's columns may carry them)."""
FOUND_SUFFIX = ".found.npy"
"""Beside ``3D_FV_files/<clip>.npy`` a prepared tree may hold ``<clip>.found.npy``: (T,) bool,
true where a face was detected (frames without one hold neutral zeros)."""


class DatasetError(ValueError):
    """A file of a REACT-layout tree is missing or malformed; the message names file and field."""


def shown(path: Path, root: Path | None = None) -> str:
    """``path`` relative to ``root`` when it lies inside it, else as given (for messages)."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def found_path(coeff_path: Path) -> Path:
    """The face-found mask stored beside a coefficient file."""
    return coeff_path.with_name(coeff_path.name[: -len(".npy")] + FOUND_SUFFIX)


# -- pairs -----------------------------------------------------------------------------------------


def clip_from_field(value: str) -> str:
    """A clip path from a csv field: backslashes, surrounding slashes, ``./`` and a media
    extension removed (``/NoXI/s/Expert_video/3.mp4`` → ``NoXI/s/Expert_video/3``)."""
    clip = value.strip().strip("\"'").replace("\\", "/").strip("/")
    while clip.startswith("./"):
        clip = clip[2:]
    for ext in CLIP_EXTENSIONS:
        if clip.lower().endswith(ext):
            return clip[: -len(ext)]
    return clip


class PairRow(NamedTuple):
    """One pair of a split csv and the row it came from."""

    row: int
    speaker: str
    listener: str


def read_pairs(path: Path, root: Path | None = None) -> list[PairRow]:
    """The pairs of a split csv in file order, header row dropped.

    Rows are ``index,speaker,listener`` (our writer) or the release's form: the last two
    non-empty fields are taken as speaker and listener. Blank rows are skipped.
    """
    name = shown(path, root)
    if not path.is_file():
        raise DatasetError(f"{name}: no such file (the split's pairs csv)")
    pairs: list[PairRow] = []
    with path.open(newline="") as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            fields = [c for c in (c.strip() for c in row) if c]
            if row_no == 1 or not fields:
                continue
            if len(fields) < 2:
                raise DatasetError(f"{name} row {row_no}: expected [index,] speaker, listener; "
                                   f"got {len(fields)} field(s)")  # fmt: skip
            speaker, listener = clip_from_field(fields[-2]), clip_from_field(fields[-1])
            for role, clip in (("speaker", speaker), ("listener", listener)):
                try:
                    person_id(clip)
                except ValueError:
                    raise DatasetError(f"{name} row {row_no}: {role} clip {clip!r} is not "
                                       "<site>/<session>/<person>/<clip>") from None  # fmt: skip
            pairs.append(PairRow(row_no, speaker, listener))
    if not pairs:
        raise DatasetError(f"{name}: no pairs after the header row")
    return pairs


# -- coefficients ----------------------------------------------------------------------------------


def check_finite(arr: np.ndarray, name: str, columns: Sequence[str]) -> None:
    """Raise naming the first non-finite value's frame and column of a ``(T, K)`` array."""
    bad = ~np.isfinite(arr)
    if bad.any():
        frame, col = np.argwhere(bad)[0]
        raise DatasetError(f"{name}: non-finite value {arr[frame, col]} at frame {frame}, "
                           f"{columns[col]}")  # fmt: skip


def read_coefficients(path: Path, root: Path | None = None) -> np.ndarray:
    """A ``3D_FV_files`` array, ``(T, 58)`` or ``(T, 1, 58)`` on disk, as ``(T, 58)`` float64.

    Only the shape and type are checked here; values depend on the tree's coefficient space.
    """
    name = shown(path, root)
    if not path.is_file():
        raise DatasetError(f"{name}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{name}: not a readable .npy array ({err})") from err
    if arr.ndim == 3 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 2 or arr.shape[1] != layout.DIM:
        raise DatasetError(f"{name}: expected (T, {layout.DIM}) or (T, 1, {layout.DIM}), "
                           f"got {arr.shape}")  # fmt: skip
    if len(arr) == 0:
        raise DatasetError(f"{name}: has no frames")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DatasetError(f"{name}: expected numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def read_found(coeff_path: Path, frames: int, root: Path | None = None) -> np.ndarray | None:
    """The ``<clip>.found.npy`` mask beside a coefficient file, or ``None`` when absent."""
    path = found_path(coeff_path)
    if not path.is_file():
        return None
    try:
        found = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{shown(path, root)}: not a readable .npy array ({err})") from err
    if found.shape != (frames,):
        raise DatasetError(f"{shown(path, root)}: expected ({frames},) to match "
                           f"{shown(coeff_path, root)}, got {found.shape}")  # fmt: skip
    return found.astype(bool)


# -- emotion ---------------------------------------------------------------------------------------


def read_emotion(path: Path, frames: int, root: Path | None = None) -> np.ndarray | None:
    """An ``Emotion`` csv (header + ``frames`` rows of 25 numbers) as float32; ``None`` if the
    file is absent."""
    name = shown(path, root)
    if not path.is_file():
        return None
    rows: list[list[float]] = []
    with path.open(newline="") as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            if row_no == 1 or not any(c.strip() for c in row):
                continue
            if len(row) != emo.DIM:
                raise DatasetError(f"{name} row {row_no}: {len(row)} values, expected {emo.DIM}")
            values = []
            for col, cell in enumerate(row):
                try:
                    value = float(cell)
                except ValueError:
                    raise DatasetError(f"{name} row {row_no}, {emo.NAMES[col]}: {cell!r} is not "
                                       "a number") from None  # fmt: skip
                if not math.isfinite(value):
                    raise DatasetError(f"{name} row {row_no}, {emo.NAMES[col]}: non-finite value")
                values.append(value)
            rows.append(values)
    if len(rows) != frames:
        raise DatasetError(f"{name}: {len(rows)} frames, but the clip's coefficients have {frames}")
    return np.asarray(rows, dtype=np.float32).reshape(frames, emo.DIM)


def write_emotion(path: Path, values: np.ndarray) -> None:
    """Write ``(T, 25)`` emotion frames as the layout's csv: a header of the names, then T rows."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[1] != emo.DIM:
        raise ValueError(f"expected (T, {emo.DIM}) emotion frames, got {values.shape}")
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(emo.NAMES)
        writer.writerows([[f"{v:.6g}" for v in row] for row in values])


# -- split and person tables -----------------------------------------------------------------------


def read_neighbours(path: Path, samples: int, root: Path | None = None) -> np.ndarray | None:
    """A ``(N, N)`` neighbour matrix over the mirrored samples as bool, ``None`` if absent."""
    name = shown(path, root)
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{name}: not a readable .npy array ({err})") from err
    if arr.shape != (samples, samples):
        raise DatasetError(f"{name}: shape {arr.shape} but the split has {samples} mirrored "
                           "samples")  # fmt: skip
    if arr.dtype != bool:
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DatasetError(f"{name}: entries must be 0 or 1, found {arr[i, j]} at [{i}, {j}]")
    return arr.astype(bool)


def read_traits(path: Path, root: Path | None = None) -> dict[str, np.ndarray] | None:
    """``person id → (5,)`` Big-Five in ``TRAIT_NAMES`` order from ``traits.csv``; ``None`` if
    absent. Columns are found by name (``person_id`` and the five traits, any order)."""
    name = shown(path, root)
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DatasetError(f"{name}: empty")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in ("person_id", *TRAIT_NAMES) if c not in header]
    if missing:
        raise DatasetError(f"{name}: no column {missing[0]!r} (header: {', '.join(header)})")
    cols = [header.index(c) for c in TRAIT_NAMES]
    pid = header.index("person_id")
    out: dict[str, np.ndarray] = {}
    for row_no, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise DatasetError(f"{name} row {row_no}: {len(row)} fields, header has {len(header)}")
        person = row[pid].strip()
        if person in out:
            raise DatasetError(f"{name} row {row_no}: person {person!r} appears twice")
        values = []
        for trait, col in zip(TRAIT_NAMES, cols, strict=True):
            try:
                value = float(row[col])
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 1.0:
                raise DatasetError(f"{name} row {row_no}, {trait}: {row[col]!r} is not a number "
                                   "in [0, 1]")  # fmt: skip
            values.append(value)
        out[person] = np.asarray(values, dtype=np.float32)
    return out


# -- audio -----------------------------------------------------------------------------------------


def read_wav_16k(path: Path, root: Path | None = None) -> np.ndarray:
    """A wav at any rate and channel count as 16 kHz mono float32."""
    try:
        pcm, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise DatasetError(f"{shown(path, root)}: cannot read as audio ({err})") from err
    if len(pcm) == 0:
        raise DatasetError(f"{shown(path, root)}: no audio samples")
    try:
        return resample_to_16k(to_mono(pcm), rate)
    except ValueError as err:
        raise DatasetError(f"{shown(path, root)}: {err}") from err


def _cache_file(path: Path, cache_dir: Path, config: MfccConfig) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{config!r}"
    return cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"


def wav_features(path: Path, root: Path | None = None, cache_dir: Path | None = None,
                 config: MfccConfig | None = None) -> np.ndarray:  # fmt: skip
    """``(n, 78)`` features of a whole wav (16 kHz MFCC, ``n = samples // 640``).

    With ``cache_dir``, features are stored there keyed by the file's path, size and mtime, so a
    changed file is recomputed; the cache is written atomically.
    """
    config = config or MfccConfig()
    cached = _cache_file(path, Path(cache_dir), config) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            log.warning("unreadable audio feature cache %s: recomputing", cached)
    feats = mfcc_features(read_wav_16k(path, root), config)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_npy_atomic(cached, feats)
    return feats


def align_frames(feats: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``feats`` cut or zero-padded to ``frames`` rows, and which rows hold real features."""
    out = np.zeros((frames, feats.shape[1]), dtype=np.float32)
    n = min(frames, len(feats))
    out[:n] = feats[:n]
    valid = np.zeros(frames, dtype=bool)
    valid[:n] = True
    return out, valid


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to a temporary name beside ``path``, then rename over it (atomic)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)
