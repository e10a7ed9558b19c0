"""The REACT2024 on-disk layout, shared by the synthetic world writer, the loader and preparation.

```
<root>/{train,val,test}/
    Video_files/<site>/<session>/<person>/<clip>.mp4            or  <clip>/1.png .. T.png
    Audio_files/<site>/<session>/<person>/<clip>.wav
    Emotion/<site>/<session>/<person>/<clip>.csv                header + T rows of 25 numbers
    3D_FV_files/<site>/<session>/<person>/<clip>.npy            (T, 58) or (T, 1, 58)
<root>/{train,val,test}.csv            header, then pairs: [index,] speaker path, listener path
<root>/neighbour_emotion_{split}.npy   (2P, 2P) bool over the mirrored sample list
<root>/traits.csv                      person_id + Big-Five in [0, 1] (synthetic world; optional)
<root>/rapport.json                    what produced the tree; its coefficient space
```

A clip path is relative and extension-free: ``<site>/<session>/<person>/<clip>``; a person id is
its first three components. The mirrored sample list has ``2P`` entries: entry ``i < P`` is pair
``i`` as written (speaker, listener), entry ``P + i`` is the same pair swapped.

``rapport.json`` says which coefficient space ``3D_FV_files`` holds: ``"rapport58"`` (ours: the
synthetic world, or a tree made by ``rapport data prepare``) or ``"faceverse"`` (the release as
distributed). A tree without it is taken to be the release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
VIDEO_DIR = "Video_files"
AUDIO_DIR = "Audio_files"
EMOTION_DIR = "Emotion"
COEFF_DIR = "3D_FV_files"
TRAITS_FILE = "traits.csv"
META_FILE = "rapport.json"
TRAIT_NAMES = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
"""Big-Five order everywhere; each in [0, 1], higher = more of the named trait (neuroticism,
not emotional stability)."""
SPACE_RAPPORT = "rapport58"
SPACE_FACEVERSE = "faceverse"


def person_id(clip: str) -> str:
    """``site/session/person`` of a clip path; raises ``ValueError`` for a malformed path."""
    parts = clip.strip("/").split("/")
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"clip path {clip!r} is not <site>/<session>/<person>/<clip>")
    return "/".join(parts[:3])


@dataclass(frozen=True)
class SplitPaths:
    """File locations of one split of a tree."""

    root: Path
    split: str

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")

    @property
    def base(self) -> Path:
        return self.root / self.split

    def coeffs(self, clip: str) -> Path:
        return self.base / COEFF_DIR / f"{clip}.npy"

    def emotion(self, clip: str) -> Path:
        return self.base / EMOTION_DIR / f"{clip}.csv"

    def audio(self, clip: str) -> Path:
        return self.base / AUDIO_DIR / f"{clip}.wav"

    def video_file(self, clip: str) -> Path:
        return self.base / VIDEO_DIR / f"{clip}.mp4"

    def video_frames_dir(self, clip: str) -> Path:
        return self.base / VIDEO_DIR / clip

    @property
    def pairs_csv(self) -> Path:
        return self.root / f"{self.split}.csv"

    @property
    def neighbours(self) -> Path:
        return self.root / f"neighbour_emotion_{self.split}.npy"


def read_meta(root: Path) -> dict:
    """``rapport.json`` of a tree, or ``{"space": "faceverse"}`` for a tree without one."""
    path = Path(root) / META_FILE
    if not path.is_file():
        return {"space": SPACE_FACEVERSE}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if meta.get("space") not in (SPACE_RAPPORT, SPACE_FACEVERSE):
        raise ValueError(f"{path}: field 'space' must be {SPACE_RAPPORT!r} or {SPACE_FACEVERSE!r}")
    return meta


def write_meta(root: Path, meta: dict) -> None:
    (Path(root) / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
