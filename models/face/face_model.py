"""The renderable listener face: a neutral mesh plus 52 ARKit morph targets.

A face for expression vector ``e`` (the 52 expression coefficients of the layout, in
:data:`~models.face.layout.BLENDSHAPE_NAMES` order) is ``neutral + Σ_i e_i · morphs[i]``. Geometry
is MediaPipe's canonical mesh (468 vertices, 898 triangles, centimetres, x toward the subject's
left, y up, z toward the camera). The morph targets are fitted to real video by
:mod:`models.face.morph_fit`; the shipped file is ``models/face/assets/face_model.npz``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.face import layout

log = logging.getLogger(__name__)

FIT_COMMAND = "rapport face fit --media .cache/media --out models/face/assets/face_model.npz"
"""The command that produces the shipped face model."""


class FaceModelMissingError(FileNotFoundError):
    """The shipped face model file is not there."""


@dataclass(frozen=True)
class FaceModel:
    """Neutral mesh, morph targets and where they came from.

    ``neutral (V, 3)`` and ``morphs (K, V, 3)`` float32 in cm, ``triangles (F, 3)`` int32,
    ``uvs (V, 2)`` (v = 0 at the top), ``names`` the K morph names (the 52 ARKit names in layout
    order), ``provenance`` a JSON-serialisable record of how the morphs were obtained.
    """

    neutral: np.ndarray
    morphs: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray
    names: tuple[str, ...] = layout.BLENDSHAPE_NAMES
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.neutral.shape[0]
        if self.neutral.shape != (v, 3):
            raise ValueError(f"neutral must be (V, 3), got {self.neutral.shape}")
        if self.morphs.shape != (len(self.names), v, 3):
            raise ValueError(
                f"morphs must be ({len(self.names)}, {v}, 3) for {len(self.names)} names, "
                f"got {self.morphs.shape}"
            )
        if self.uvs.shape != (v, 2):
            raise ValueError(f"uvs must be ({v}, 2), got {self.uvs.shape}")
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError(f"triangles must be (F, 3), got {self.triangles.shape}")
        if self.triangles.min() < 0 or self.triangles.max() >= v:
            raise ValueError("a triangle index is out of range")

    @property
    def num_vertices(self) -> int:
        return int(self.neutral.shape[0])

    def deform(self, expression: np.ndarray) -> np.ndarray:
        """``expression (..., K)`` → vertices ``(..., V, 3)`` = neutral + Σ_k e_k morph_k."""
        e = np.asarray(expression, dtype=np.float32)
        if e.shape[-1] != len(self.names):
            raise ValueError(f"expected (..., {len(self.names)}) expression, got {e.shape}")
        offset = np.tensordot(e, self.morphs, axes=([-1], [0]))  # (..., V, 3)
        return self.neutral + offset

    def morph(self, name: str) -> np.ndarray:
        """The ``(V, 3)`` displacement of one named target."""
        try:
            return self.morphs[self.names.index(name)]
        except ValueError:
            raise KeyError(f"face model has no morph target {name!r}") from None

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (float32 geometry, provenance as a JSON string)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(
                fh,
                neutral=self.neutral.astype(np.float32),
                morphs=self.morphs.astype(np.float32),
                triangles=self.triangles.astype(np.int32),
                uvs=self.uvs.astype(np.float32),
                names=np.asarray(json.dumps(list(self.names))),
                provenance=np.asarray(json.dumps(self.provenance, sort_keys=True)),
            )
        log.info("wrote face model %s (%d bytes)", path, path.stat().st_size)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FaceModel:
        """Read a file written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(
                neutral=data["neutral"].astype(np.float32),
                morphs=data["morphs"].astype(np.float32),
                triangles=data["triangles"].astype(np.int32),
                uvs=data["uvs"].astype(np.float32),
                names=tuple(json.loads(str(data["names"]))),
                provenance=json.loads(str(data["provenance"])),
            )


def default_face_model_path() -> Path:
    """Where the shipped face model lives inside the package."""
    return Path(__file__).resolve().parent / "assets" / "face_model.npz"


def load_default_face_model() -> FaceModel:
    """The shipped face model; raises :class:`FaceModelMissingError` naming the fit command."""
    path = default_face_model_path()
    if not path.is_file():
        raise FaceModelMissingError(
            f"face model {path} is missing: produce it with `{FIT_COMMAND}` (or `make fit-face`)"
        )
    return FaceModel.load(path)
