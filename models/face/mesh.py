"""MediaPipe's canonical face mesh, read from ``face_landmarker.task``, and rigid alignment to it.

The bundle holds ``geometry_pipeline_metadata_landmarks.binarypb``, a serialised
``GeometryPipelineMetadata`` protobuf. As found in the file (sha256 in :mod:`.task_file`)::

    GeometryPipelineMetadata {
      Mesh3d canonical_mesh = 1 {
        VertexType vertex_type = 1;           // 0 = VERTEX_PT: x, y, z, u, v per vertex
        PrimitiveType primitive_type = 2;     // 0 = TRIANGLE
        repeated float vertex_buffer = 3;     // stored unpacked (one fixed32 per value)
        repeated uint32 index_buffer = 4;     // stored unpacked (one varint per value)
      }
      repeated WeightedLandmarkRef procrustes_landmark_basis = 2 {
        uint32 landmark_id = 1; float weight = 2;
      }
      InputSource input_source = 3;
    }

A small wire-format reader below decodes it (varints, length-delimited, fixed32/64; repeated
scalars packed or not, as every protobuf parser must accept both).

Canonical axes: x toward the subject's left (image right for an unmirrored camera), y up, z toward
the camera; units are centimetres (the mesh is about 15.5 cm wide and 17.7 cm tall). UVs use the
image convention (v = 0 at the top: the forehead has small v), which is also glTF's.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.face.task_file import GEOMETRY_MEMBER, read_member, resolve_task_path

log = logging.getLogger(__name__)

NUM_VERTICES = 468
NUM_TRIANGLES = 898
NUM_PROCRUSTES = 33
_VERTEX_PT = 0
_TRIANGLE = 0

# Wire types of the protobuf encoding.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class MeshFormatError(ValueError):
    """The geometry metadata is not the expected protobuf or mesh."""


# ------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; returns (value, next position)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise MeshFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise MeshFormatError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)`` of one message; value is int or raw bytes.

    Varints come as ints; length-delimited, fixed32 and fixed64 fields come as their raw bytes.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield field, wire, value
            continue
        if wire == _LEN:
            size, pos = _varint(buf, pos)
        elif wire == _FIXED32:
            size = 4
        elif wire == _FIXED64:
            size = 8
        else:
            raise MeshFormatError(f"unsupported wire type {wire} (field {field})")
        if pos + size > len(buf):
            raise MeshFormatError(f"field {field} runs past the end of its message")
        yield field, wire, buf[pos : pos + size]
        pos += size


def _repeated_floats(entries: list[tuple[int, int | bytes]]) -> np.ndarray:
    """A repeated float field from its (wire type, value) entries, packed or unpacked."""
    chunks = []
    for wire, value in entries:
        if wire not in (_LEN, _FIXED32) or not isinstance(value, bytes) or len(value) % 4:
            raise MeshFormatError("a float field has the wrong wire type or length")
        chunks.append(value)
    return np.frombuffer(b"".join(chunks), dtype="<f4").astype(np.float32)


def _repeated_uints(entries: list[tuple[int, int | bytes]]) -> np.ndarray:
    """A repeated uint32 field from its (wire type, value) entries, packed or unpacked."""
    out: list[int] = []
    for wire, value in entries:
        if wire == _VARINT and isinstance(value, int):
            out.append(value)
        elif wire == _LEN and isinstance(value, bytes):
            pos = 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                out.append(item)
        else:
            raise MeshFormatError("a uint32 field has the wrong wire type")
    return np.asarray(out, dtype=np.int64)


def _group(buf: bytes) -> dict[int, list[tuple[int, int | bytes]]]:
    """All fields of one message, grouped by field number, in order."""
    groups: dict[int, list[tuple[int, int | bytes]]] = {}
    for field, wire, value in _fields(buf):
        groups.setdefault(field, []).append((wire, value))
    return groups


def _scalar(entries: list[tuple[int, int | bytes]] | None, default: int = 0) -> int:
    """The last value of a singular varint field (protobuf: last one wins)."""
    if not entries:
        return default
    wire, value = entries[-1]
    if wire != _VARINT or not isinstance(value, int):
        raise MeshFormatError("a varint field has the wrong wire type")
    return value


# ---------------------------------------------------------------------------------- the mesh


@dataclass(frozen=True)
class CanonicalMesh:
    """The canonical face: ``vertices (468, 3)`` cm, ``uvs (468, 2)``, ``triangles (898, 3)``.

    ``procrustes_ids`` / ``procrustes_weights`` (33 each) are the landmarks and weights MediaPipe
    uses to fit the rigid head pose; they sit on the parts of the face that move least.
    """

    vertices: np.ndarray
    uvs: np.ndarray
    triangles: np.ndarray
    procrustes_ids: np.ndarray
    procrustes_weights: np.ndarray


def parse_geometry_metadata(data: bytes) -> CanonicalMesh:
    """Decode a serialised ``GeometryPipelineMetadata`` into a :class:`CanonicalMesh`."""
    top = _group(data)
    if len(top.get(1, [])) != 1 or not isinstance(top[1][0][1], bytes):
        raise MeshFormatError("expected exactly one canonical_mesh (field 1)")
    mesh = _group(top[1][0][1])
    if _scalar(mesh.get(1)) != _VERTEX_PT or _scalar(mesh.get(2)) != _TRIANGLE:
        raise MeshFormatError("canonical mesh is not VERTEX_PT triangles")
    vbuf = _repeated_floats(mesh.get(3, []))
    ibuf = _repeated_uints(mesh.get(4, []))
    if vbuf.size != NUM_VERTICES * 5:
        raise MeshFormatError(f"expected {NUM_VERTICES} vertices, found {vbuf.size / 5:g}")
    if ibuf.size != NUM_TRIANGLES * 3:
        raise MeshFormatError(f"expected {NUM_TRIANGLES} triangles, found {ibuf.size / 3:g}")
    if ibuf.max() >= NUM_VERTICES:
        raise MeshFormatError(f"triangle index {int(ibuf.max())} out of range")
    ids, weights = [], []
    for wire, value in top.get(2, []):
        if wire != _LEN or not isinstance(value, bytes):
            raise MeshFormatError("procrustes_landmark_basis entry has the wrong wire type")
        ref = _group(value)
        ids.append(_scalar(ref.get(1)))
        weights.append(_repeated_floats(ref.get(2, [(_FIXED32, struct.pack("<f", 0.0))]))[-1])
    if len(ids) != NUM_PROCRUSTES:
        raise MeshFormatError(f"expected {NUM_PROCRUSTES} Procrustes weights, found {len(ids)}")
    if max(ids) >= NUM_VERTICES:
        raise MeshFormatError(f"Procrustes landmark id {max(ids)} out of range")
    vb = vbuf.reshape(NUM_VERTICES, 5)
    return CanonicalMesh(
        vertices=_frozen(vb[:, :3].astype(np.float32)),
        uvs=_frozen(vb[:, 3:].astype(np.float32)),
        triangles=_frozen(ibuf.reshape(NUM_TRIANGLES, 3).astype(np.int32)),
        procrustes_ids=_frozen(np.asarray(ids, dtype=np.int32)),
        procrustes_weights=_frozen(np.asarray(weights, dtype=np.float32)),
    )


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


@lru_cache(maxsize=4)
def _load_cached(task: Path) -> CanonicalMesh:
    return parse_geometry_metadata(read_member(task, GEOMETRY_MEMBER))


def load_canonical_mesh(task_path: str | Path | None = None) -> CanonicalMesh:
    """The canonical mesh from the (sha256-verified) ``face_landmarker.task``; cached per path."""
    return _load_cached(resolve_task_path(task_path).resolve())


# ---------------------------------------------------------------------------------- geometry


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit vertex normals ``(..., V, 3)``: area-weighted sums of the adjacent face normals.

    Faces are taken counter-clockwise (right-hand rule), as glTF does for front faces.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    a, b, c = v[..., tri[:, 0], :], v[..., tri[:, 1], :], v[..., tri[:, 2], :]
    face = np.cross(b - a, c - a)  # (..., F, 3), length = 2 × area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, (..., tri[:, k], slice(None)), face)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    return (normals / np.maximum(norm, 1e-12)).astype(np.float32)


def observation_points(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Normalised landmarks ``(..., 478|468, 3)`` → ``(..., 468, 3)`` pixel points, canonical axes.

    x right (``x·W``), y up (``−y·H``), z toward the camera (``−z·W``: MediaPipe's z shrinks
    toward the camera and is in units of the image width).
    """
    lm = np.asarray(landmarks, dtype=np.float64)[..., :NUM_VERTICES, :]
    w, h = image_size
    return lm * np.array([w, -h, -w], dtype=np.float64)


def align_to_canonical(
    points: np.ndarray, mesh: CanonicalMesh
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted similarity Procrustes of ``points (..., N, 3)`` onto the canonical mesh.

    Finds ``s, R, t`` minimising ``Σ_i w_i |s R p_i + t − c_i|²`` over the 33 Procrustes landmarks
    (ids and weights from ``mesh``), with ``R`` a proper rotation (Umeyama's method). Returns
    ``(aligned (..., N, 3), scale (...), R (..., 3, 3), t (..., 3))`` where
    ``aligned = s R p + t`` for every point, so the result is in canonical-mesh units (cm).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] != 3 or p.shape[-2] < NUM_VERTICES:
        raise ValueError(f"expected (..., N>={NUM_VERTICES}, 3) points, got {p.shape}")
    ids = mesh.procrustes_ids
    w = mesh.procrustes_weights.astype(np.float64)
    w = w / w.sum()
    src = p[..., ids, :]  # (..., 33, 3)
    dst = mesh.vertices[ids].astype(np.float64)  # (33, 3)
    mu_src = np.einsum("k,...kd->...d", w, src)
    mu_dst = w @ dst
    ps = src - mu_src[..., None, :]
    pd = dst - mu_dst
    cov = np.einsum("k,kd,...ke->...de", w, pd, ps)  # (..., 3, 3): Σ w c pᵀ
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    sig = sig.copy()
    sig[..., 2] *= d
    rot = u @ vt
    var_src = np.einsum("k,...kd->...", w, ps**2)
    scale = sig.sum(axis=-1) / np.maximum(var_src, 1e-300)
    trans = mu_dst - scale[..., None] * np.einsum("...de,...e->...d", rot, mu_src)
    aligned = scale[..., None, None] * np.einsum("...de,...ne->...nd", rot, p) + trans[..., None, :]
    return aligned, scale, rot, trans


def outward_fraction(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Share of vertex normals that point away from the head centre (near 1 = outward winding).

    The mesh is a face mask, not a closed head, so its vertex centroid sits just behind the skin;
    the head centre is taken at the centroid's x, y and the mask's rearmost depth (least z).
    """
    v = np.asarray(vertices, dtype=np.float64)
    centre = v.mean(axis=0)
    centre[2] = v[:, 2].min()
    normals = vertex_normals(v, triangles)
    return float(np.mean(np.sum(normals * (v - centre), axis=-1) > 0))
