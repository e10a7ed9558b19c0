"""Binary glTF 2.0 (``.glb``) for the face model: one mesh with 52 ARKit morph targets.

Written with ``json``, ``struct`` and numpy only. The file holds one scene with one node named
``face`` (scale 0.01: the mesh is in centimetres, the scene in metres, glTF's unit) and one mesh:
POSITION (the neutral, with min/max), NORMAL, TEXCOORD_0, triangle indices, and 52 morph targets
(POSITION deltas, each with the min/max the spec requires). ``mesh.extras.targetNames`` lists the
52 names in layout order; three.js reads it into ``morphTargetDictionary``. All ``weights`` are 0.
Triangles are counter-clockwise seen from outside (glTF's front face); the writer checks this and
flips the winding if the model's triangles face inward.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np

from models.face.face_model import FaceModel
from models.face.mesh import outward_fraction, vertex_normals

log = logging.getLogger(__name__)

GLB_MAGIC = 0x46546C67  # "glTF"
GLB_VERSION = 2
CHUNK_JSON = 0x4E4F534A  # "JSON"
CHUNK_BIN = 0x004E4942  # "BIN\0"

FLOAT, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
TRIANGLES = 4
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_DTYPES = {FLOAT: np.dtype("<f4"), UNSIGNED_SHORT: np.dtype("<u2"), UNSIGNED_INT: np.dtype("<u4")}

SKIN_COLOUR = (0.86, 0.67, 0.57, 1.0)
"""Linear RGBA base colour of the face material (a light skin tone)."""
SCENE_SCALE = 0.01
"""Node scale: centimetres → metres."""


class GlbError(ValueError):
    """A GLB file is malformed."""


class _Builder:
    """Accumulates binary data as 4-byte-aligned buffer views with one accessor each."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add(self, data: np.ndarray, kind: str, target: int, *, bounds: bool = False) -> int:
        """Append ``data`` (rows = elements) and return its accessor index."""
        component = {np.dtype("<f4"): FLOAT, np.dtype("<u2"): UNSIGNED_SHORT,
                     np.dtype("<u4"): UNSIGNED_INT}[data.dtype]  # fmt: skip
        raw = np.ascontiguousarray(data).tobytes()
        offset = len(self.blob)
        self.blob += raw + b"\0" * (-len(raw) % 4)
        self.views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(raw),
                           "target": target})  # fmt: skip
        count = data.shape[0] if kind != "SCALAR" else data.size
        accessor: dict[str, Any] = {"bufferView": len(self.views) - 1, "componentType": component,
                                    "count": int(count), "type": kind}  # fmt: skip
        if bounds:
            rows = data.reshape(count, _COMPONENTS[kind])
            accessor["min"] = [float(x) for x in rows.min(axis=0)]
            accessor["max"] = [float(x) for x in rows.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _triangles_outward(model: FaceModel) -> np.ndarray:
    """The model's triangles, flipped if most vertex normals point into the head."""
    tri = np.asarray(model.triangles, dtype=np.int64)
    share = outward_fraction(model.neutral, tri)
    if share < 0.5:
        log.info("face triangles faced inward (%.0f%% outward): flipping winding", 100 * share)
        tri = tri[:, ::-1]
    return tri


def build_face_gltf(model: FaceModel) -> tuple[dict[str, Any], bytes]:
    """The glTF JSON document and binary buffer for ``model``."""
    tri = _triangles_outward(model)
    neutral = np.asarray(model.neutral, dtype="<f4")
    b = _Builder()
    attributes = {
        "POSITION": b.add(neutral, "VEC3", ARRAY_BUFFER, bounds=True),
        "NORMAL": b.add(vertex_normals(neutral, tri).astype("<f4"), "VEC3", ARRAY_BUFFER),
        "TEXCOORD_0": b.add(np.asarray(model.uvs, dtype="<f4"), "VEC2", ARRAY_BUFFER),
    }
    index_dtype = "<u2" if model.num_vertices < 0xFFFF else "<u4"
    indices = b.add(tri.reshape(-1).astype(index_dtype), "SCALAR", ELEMENT_ARRAY_BUFFER)
    targets = [
        {"POSITION": b.add(np.asarray(m, dtype="<f4"), "VEC3", ARRAY_BUFFER, bounds=True)}
        for m in model.morphs
    ]
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "rapport models.face.gltf"},
        "scene": 0,
        "scenes": [{"name": "face", "nodes": [0]}],
        "nodes": [{"name": "face", "mesh": 0, "scale": [SCENE_SCALE] * 3}],
        "meshes": [
            {
                "name": "face",
                "primitives": [
                    {
                        "attributes": attributes,
                        "indices": indices,
                        "material": 0,
                        "mode": TRIANGLES,
                        "targets": targets,
                    }
                ],
                "weights": [0.0] * len(targets),
                "extras": {"targetNames": list(model.names)},
            }
        ],  # fmt: skip
        "materials": [
            {
                "name": "skin",
                "pbrMetallicRoughness": {
                    "baseColorFactor": list(SKIN_COLOUR),
                    "metallicFactor": 0.0,
                    "roughnessFactor": 0.6,
                },
                "doubleSided": False,
            }
        ],  # fmt: skip
        "buffers": [{"byteLength": len(b.blob)}],
        "bufferViews": b.views,
        "accessors": b.accessors,
    }
    return doc, bytes(b.blob)


def _chunk(kind: int, payload: bytes, pad: bytes) -> bytes:
    payload += pad * (-len(payload) % 4)
    return struct.pack("<II", len(payload), kind) + payload


def write_face_glb(model: FaceModel, path: str | Path) -> Path:
    """Write ``model`` as a GLB file; returns the path."""
    doc, blob = build_face_gltf(model)
    body = _chunk(CHUNK_JSON, json.dumps(doc, separators=(",", ":")).encode(), b" ")
    body += _chunk(CHUNK_BIN, blob, b"\0")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<III", GLB_MAGIC, GLB_VERSION, 12 + len(body)) + body)
    log.info("wrote %s (%d bytes, %d morph targets)", path, 12 + len(body), len(model.names))
    return path


def read_glb(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The JSON document and the binary chunk of a GLB file; raises :class:`GlbError`."""
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise GlbError(f"{path}: too short for a GLB file")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != GLB_VERSION:
        raise GlbError(f"{path}: not a glTF 2.0 binary (magic {magic:#x}, version {version})")
    if length != len(data):
        raise GlbError(f"{path}: header says {length} bytes, file has {len(data)}")
    chunks: list[tuple[int, bytes]] = []
    pos = 12
    while pos < length:
        if pos + 8 > length:
            raise GlbError(f"{path}: truncated chunk header at byte {pos}")
        size, kind = struct.unpack_from("<II", data, pos)
        if size % 4 or pos + 8 + size > length:
            raise GlbError(f"{path}: chunk at byte {pos} is misaligned or runs past the end")
        chunks.append((kind, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    if not chunks or chunks[0][0] != CHUNK_JSON:
        raise GlbError(f"{path}: the first chunk is not JSON")
    doc = json.loads(chunks[0][1].decode("utf-8"))
    blob = chunks[1][1] if len(chunks) > 1 and chunks[1][0] == CHUNK_BIN else b""
    return doc, blob


def read_accessor(doc: dict[str, Any], blob: bytes, index: int) -> np.ndarray:
    """Decode accessor ``index`` (tightly packed views only) to ``(count, components)``."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = _DTYPES[acc["componentType"]]
    width = _COMPONENTS[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    size = acc["count"] * width * dtype.itemsize
    if start + size > view.get("byteOffset", 0) + view["byteLength"] or start + size > len(blob):
        raise GlbError(f"accessor {index} runs past its buffer view")
    return np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=start).reshape(
        acc["count"], width
    )
