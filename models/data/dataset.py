"""One dataset over a REACT-layout tree: the synthetic world, a prepared tree or the release.

``ReactDataset(root, split)`` reads ``models.data.react_layout``'s layout. Sample ``i`` of the
mirrored list is pair ``i`` as written for ``i < P`` and the same pair with speaker and listener
swapped for ``P + i`` (``mirror=False``: only the first ``P``). Each sample carries both clips in
our 58-d space with their 25-d emotion, 78-d speaker audio features and a reference to the video
(not decoded).

Coefficient space: ``rapport.json`` says ``"rapport58"`` (used as is, value ranges checked) or
``"faceverse"`` (the release; a tree without ``rapport.json`` is one), which needs a
:class:`~models.data.faceverse.FaceVerseMapping`.

Files are read lazily and validated when read; the constructor checks the pairs csv, that every
referenced clip has coefficients, and the neighbour matrix. Loaded clips are kept in a small
least-recently-used cache. Every problem is a :class:`~models.data.io.DatasetError` naming the
file and the field.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from models.data import react_layout as rl
from models.data.emotion import emotion_from_coefficients
from models.data.faceverse import FaceVerseMapping
from models.data.io import (
    DatasetError,
    PairRow,
    align_frames,
    read_coefficients,
    read_emotion,
    read_found,
    read_neighbours,
    read_pairs,
    read_traits,
    shown,
    wav_features,
)
from models.data.windows import (
    CONTEXT,
    PREVIOUS,
    WINDOW,
    OnlineWindow,
    online_window,
    window_starts,
)
from models.face import layout

log = logging.getLogger(__name__)

REACT_FRAMES = 750
"""The clip length almost every REACT model trains on (files hold 751 frames)."""


@dataclass(frozen=True)
class VideoRef:
    """Where a clip's video is; not decoded. ``png``: a folder of ``1.png .. T.png``."""

    kind: Literal["mp4", "png"]
    path: Path


@dataclass(frozen=True, eq=False)
class Clip:
    """One clip in our space; every per-frame array has the same ``T`` rows."""

    path: str  # <site>/<session>/<person>/<clip>
    person: str  # <site>/<session>/<person>
    coeffs: np.ndarray  # (T, 58) float32
    emotion: np.ndarray  # (T, 25) float32
    emotion_derived: bool  # no Emotion csv: computed by emotion_from_coefficients
    audio_features: np.ndarray | None  # (T, 78) float32; None: no wav, or audio=False
    audio_valid: np.ndarray | None  # (T,) bool: frames covered by the wav
    valid: np.ndarray  # (T,) bool: real frames (false on padding added by ``frames``)
    found: np.ndarray  # (T,) bool: a face was found (prepared trees' .found.npy; else all true)
    video: VideoRef | None

    @property
    def frames(self) -> int:
        return len(self.coeffs)

    @property
    def real_frames(self) -> int:
        return int(self.valid.sum())


@dataclass(frozen=True, eq=False)
class Sample:
    """Entry ``index`` of the (mirrored) sample list: pair ``pair``, swapped when ``mirrored``."""

    index: int
    pair: int
    mirrored: bool
    speaker: Clip
    listener: Clip


def fit_length(clip: Clip, frames: int | None) -> Clip:
    """``clip`` cut to ``frames`` or padded by repeating its last frame (``valid`` false there)."""
    if frames is None or frames == clip.frames:
        return clip
    idx = np.minimum(np.arange(frames), clip.frames - 1)
    valid = clip.valid[idx] & (np.arange(frames) < clip.frames)
    audio = clip.audio_features[idx] if clip.audio_features is not None else None
    audio_valid = clip.audio_valid[idx] & valid if clip.audio_valid is not None else None
    return replace(clip, coeffs=clip.coeffs[idx], emotion=clip.emotion[idx], valid=valid,
                   found=clip.found[idx], audio_features=audio, audio_valid=audio_valid)


def _natural(clip: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", clip))


class ReactDataset:
    """The samples of one split of a REACT-layout tree (see the module docstring).

    ``frames``: cut or pad every clip to this many frames (REACT models use
    :data:`REACT_FRAMES`); ``audio=False`` skips audio features; ``faceverse`` maps a release
    tree; ``cache_dir`` stores audio features between runs; ``cache_clips`` bounds the in-memory
    clip cache.
    """

    def __init__(self, root: str | Path, split: str, *, mirror: bool = True,
                 frames: int | None = None, audio: bool = True,
                 faceverse: FaceVerseMapping | None = None, cache_dir: str | Path | None = None,
                 cache_clips: int = 64) -> None:  # fmt: skip
        if frames is not None and frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        self.root = Path(root)
        self.split = split
        self.paths = rl.SplitPaths(self.root, split)
        self.mirror, self.frames, self.audio = mirror, frames, audio
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.space = self._space()
        if self.space == rl.SPACE_FACEVERSE and faceverse is None:
            raise DatasetError(
                f"{self.root}: 3D_FV_files hold FaceVerse coefficients (no {rl.META_FILE} says "
                "otherwise): pass a FaceVerseMapping (the 52 expression names, optionally the "
                f"mean face), or convert the tree with `rapport data prepare --react-root "
                f"{self.root} --out DIR`")
        if self.space == rl.SPACE_RAPPORT and faceverse is not None:
            log.warning("%s holds %s coefficients: the FaceVerse mapping is not used",
                        self.root, rl.SPACE_RAPPORT)  # fmt: skip
        self.faceverse = faceverse if self.space == rl.SPACE_FACEVERSE else None
        self.pairs: list[PairRow] = read_pairs(self.paths.pairs_csv, self.root)
        self._clips_by_person = self._index_clips()
        full = read_neighbours(self.paths.neighbours, 2 * len(self.pairs), self.root)
        self.neighbours = full if full is None or mirror else full[: len(self.pairs),
                                                                    : len(self.pairs)]
        self._traits: dict[str, np.ndarray] | None = None
        self._traits_read = False
        self._cache: OrderedDict[str, Clip] = OrderedDict()
        self._cache_size = max(int(cache_clips), 1)

    def _space(self) -> str:
        try:
            return rl.read_meta(self.root)["space"]
        except ValueError as err:
            raise DatasetError(str(err)) from err

    def _index_clips(self) -> dict[str, list[str]]:
        name = shown(self.paths.pairs_csv, self.root)
        by_person: dict[str, set[str]] = {}
        for row in self.pairs:
            for role, clip in (("speaker", row.speaker), ("listener", row.listener)):
                path = self.paths.coeffs(clip)
                if not path.is_file():
                    raise DatasetError(f"{name} row {row.row}: {role} clip {clip!r} has no "
                                       f"{shown(path, self.root)}")  # fmt: skip
                by_person.setdefault(rl.person_id(clip), set()).add(clip)
        return {p: sorted(c, key=_natural) for p, c in sorted(by_person.items())}

    # -- samples ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return 2 * len(self.pairs) if self.mirror else len(self.pairs)

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        return i % n

    def pair_clips(self, i: int) -> tuple[str, str]:
        """``(speaker clip, listener clip)`` of sample ``i`` without loading them."""
        i = self._index(i)
        row = self.pairs[i % len(self.pairs)]
        mirrored = i >= len(self.pairs)
        return (row.listener, row.speaker) if mirrored else (row.speaker, row.listener)

    def __getitem__(self, i: int) -> Sample:
        i = self._index(i)
        speaker, listener = self.pair_clips(i)
        return Sample(index=i, pair=i % len(self.pairs), mirrored=i >= len(self.pairs),
                      speaker=self.clip(speaker), listener=self.clip(listener))  # fmt: skip

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def clip(self, path: str) -> Clip:
        """One clip of the split, fitted to ``frames``."""
        return fit_length(self._load(path), self.frames)

    # -- persons ---------------------------------------------------------------------------------

    @property
    def persons(self) -> list[str]:
        """Every person id (``site/session/person``) with a clip in the split, sorted."""
        return list(self._clips_by_person)

    def clips_of(self, person: str) -> list[str]:
        """The clips of ``person`` referenced by the split's pairs csv, in natural order."""
        try:
            return list(self._clips_by_person[person])
        except KeyError:
            raise KeyError(f"person {person!r} has no clip in split {self.split!r}") from None

    def traits(self, person: str) -> np.ndarray | None:
        """``(5,)`` Big-Five (``TRAIT_NAMES`` order) from ``traits.csv``; ``None`` without it."""
        if not self._traits_read:
            self._traits = read_traits(self.root / rl.TRAITS_FILE, self.root)
            self._traits_read = True
        if self._traits is None:
            return None
        if person not in self._traits:
            raise DatasetError(f"{rl.TRAITS_FILE}: no row for person {person!r}")
        return self._traits[person].copy()

    def history(self, i: int, seconds: float = 10.0, rng: np.random.Generator | None = None, *,
                same_clip_ok: bool = False) -> np.ndarray:  # fmt: skip
        """``(frames, 58)``: a random contiguous ``seconds`` of another clip of sample ``i``'s
        listener, for personalisation. Never the sample's own listener clip unless
        ``same_clip_ok`` and the person has no other; clips shorter than the window are skipped.
        """
        frames = int(round(seconds * layout.FPS))
        if frames < 1:
            raise ValueError(f"seconds must cover at least one frame, got {seconds}")
        own = self.pair_clips(i)[1]
        person = rl.person_id(own)
        others = [c for c in self.clips_of(person) if c != own]
        if not others and same_clip_ok:
            others = [own]
        if not others:
            raise DatasetError(f"history of sample {i}: listener {person} has no clip in split "
                               f"{self.split!r} other than {own!r}")  # fmt: skip
        lengths = {c: self._load(c).frames for c in others}
        usable = [c for c in others if lengths[c] >= frames]
        if not usable:
            raise DatasetError(f"history of sample {i}: every other clip of {person} is shorter "
                               f"than {frames} frames ({seconds} s): {lengths}")  # fmt: skip
        rng = rng if rng is not None else np.random.default_rng()
        source = self._load(usable[int(rng.integers(len(usable)))])
        start = int(rng.integers(source.frames - frames + 1))
        return source.coeffs[start: start + frames].copy()

    # -- online windows --------------------------------------------------------------------------

    def window(self, i: int, t: int, *, w: int = WINDOW, context: int = CONTEXT,
               prev: int = PREVIOUS) -> OnlineWindow:  # fmt: skip
        """The online training window of sample ``i`` at listener frame ``t``
        (:func:`models.data.windows.online_window`)."""
        sample = self[i]
        return online_window(sample.speaker, sample.listener, t, index=sample.index, w=w,
                             context=context, prev=prev)  # fmt: skip

    def iter_windows(self, *, w: int = WINDOW, stride: int | None = None
                     ) -> Iterator[tuple[int, int]]:  # fmt: skip
        """``(sample, t)`` of every window: starts ``0, stride, ...`` (``stride`` defaults to
        ``w``) over each listener's real frames; a last partial window is padded and masked."""
        for i in range(len(self)):
            real = self._length(self.pair_clips(i)[1])
            if self.frames is not None:
                real = min(real, self.frames)
            for t in window_starts(real, stride or w):
                yield i, t

    # -- loading ---------------------------------------------------------------------------------

    def check(self) -> int:
        """Load and validate every clip of the split; returns the number of clips."""
        clips = [c for cs in self._clips_by_person.values() for c in cs]
        for clip in clips:
            self._load(clip)
        return len(clips)

    def _length(self, clip: str) -> int:
        """Frames of a clip from its file header alone (validated when the clip is loaded)."""
        if clip in self._cache:
            return self._cache[clip].frames
        try:
            return int(np.load(self.paths.coeffs(clip), mmap_mode="r").shape[0])
        except (OSError, ValueError, IndexError):
            return self._load(clip).frames  # raises the precise DatasetError

    def _load(self, clip: str) -> Clip:
        if clip in self._cache:
            self._cache.move_to_end(clip)
            return self._cache[clip]
        loaded = self._read(clip)
        self._cache[clip] = loaded
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return loaded

    def _coefficients(self, path: Path) -> np.ndarray:
        name = shown(path, self.root)
        raw = read_coefficients(path, self.root)
        if self.faceverse is not None:
            return self.faceverse.to_rapport(raw, name=name)
        try:
            return layout.validate(raw, name=name)
        except ValueError as err:
            raise DatasetError(str(err)) from err

    def _read(self, clip: str) -> Clip:
        path = self.paths.coeffs(clip)
        coeffs = self._coefficients(path)
        frames = len(coeffs)
        found = read_found(path, frames, self.root)
        emotion = read_emotion(self.paths.emotion(clip), frames, self.root)
        audio = audio_valid = None
        wav = self.paths.audio(clip)
        if self.audio and wav.is_file():
            feats = wav_features(wav, self.root, self.cache_dir)
            audio, audio_valid = align_frames(feats, frames)
        return Clip(
            path=clip, person=rl.person_id(clip), coeffs=coeffs,
            emotion=emotion if emotion is not None else emotion_from_coefficients(coeffs),
            emotion_derived=emotion is None, audio_features=audio, audio_valid=audio_valid,
            valid=np.ones(frames, dtype=bool),
            found=found if found is not None else np.ones(frames, dtype=bool),
            video=self._video(clip),
        )  # fmt: skip

    def _video(self, clip: str) -> VideoRef | None:
        if self.paths.video_file(clip).is_file():
            return VideoRef("mp4", self.paths.video_file(clip))
        if self.paths.video_frames_dir(clip).is_dir():
            return VideoRef("png", self.paths.video_frames_dir(clip))
        return None
