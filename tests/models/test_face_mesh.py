"""The canonical mesh read from face_landmarker.task, and rigid alignment to it."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from models.face.mesh import (
    MeshFormatError,
    align_to_canonical,
    load_canonical_mesh,
    observation_points,
    outward_fraction,
    parse_geometry_metadata,
    vertex_normals,
)
from models.face.rotation import euler_to_matrix
from models.face.task_file import GEOMETRY_MEMBER, read_member, resolve_task_path


@pytest.fixture(scope="module")
def mesh():
    return load_canonical_mesh()


def test_counts_and_ranges(mesh) -> None:
    assert mesh.vertices.shape == (468, 3) and mesh.vertices.dtype == np.float32
    assert mesh.uvs.shape == (468, 2)
    assert mesh.triangles.shape == (898, 3) and mesh.triangles.dtype == np.int32
    assert mesh.procrustes_ids.shape == (33,) and mesh.procrustes_weights.shape == (33,)
    assert (mesh.procrustes_weights > 0).all()
    assert len(set(mesh.procrustes_ids.tolist())) == 33
    assert ((mesh.uvs >= 0) & (mesh.uvs <= 1)).all()
    assert mesh.triangles.min() >= 0 and mesh.triangles.max() < 468
    # Every vertex is used and no triangle repeats a vertex.
    assert len(np.unique(mesh.triangles)) == 468
    assert all(len(set(t)) == 3 for t in mesh.triangles.tolist())


def test_units_and_axes(mesh) -> None:
    """Centimetres (a face ~15 cm wide), y up, z toward the camera, symmetric about x = 0."""
    extent = np.ptp(mesh.vertices, axis=0)
    assert 12 < extent[0] < 20 and 14 < extent[1] < 22
    top, bottom = mesh.vertices[:, 1].argmax(), mesh.vertices[:, 1].argmin()
    assert mesh.uvs[top, 1] < mesh.uvs[bottom, 1]  # UV v grows downward: forehead small v
    mirrored = mesh.vertices * np.array([-1, 1, 1])
    gap = np.linalg.norm(mirrored[:, None] - mesh.vertices[None], axis=-1).min(axis=1)
    assert gap.max() < 1e-4


def test_normals_mostly_outward(mesh) -> None:
    assert outward_fraction(mesh.vertices, mesh.triangles) > 0.95
    assert outward_fraction(mesh.vertices, mesh.triangles[:, ::-1]) < 0.05
    n = vertex_normals(mesh.vertices, mesh.triangles)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert (n[:, 2] > 0).mean() > 0.8  # the face looks at the camera (+z)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_procrustes_recovers_similarity(mesh, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rot = euler_to_matrix(rng.uniform(-1.2, 1.2, 3))
    scale = rng.uniform(0.2, 40.0)
    shift = rng.normal(0, 50, 3)
    extra = rng.normal(0, 5, (10, 3))  # stand-ins for the 10 iris points: carried along
    points = np.concatenate([mesh.vertices, extra]) @ rot.T * scale + shift
    aligned, s, r, t = align_to_canonical(points, mesh)
    np.testing.assert_allclose(aligned[:468], mesh.vertices, atol=1e-4)
    np.testing.assert_allclose(aligned[468:], extra, atol=1e-4)
    np.testing.assert_allclose(s * scale, 1.0, rtol=1e-6)
    np.testing.assert_allclose(r, rot.T, atol=1e-6)
    assert aligned.shape == (478, 3) and np.isclose(np.linalg.det(r), 1.0)
    np.testing.assert_allclose(s * points @ r.T + t, aligned, atol=1e-9)


def test_procrustes_batches_and_rejects_reflection(mesh) -> None:
    rng = np.random.default_rng(3)
    rots = euler_to_matrix(rng.uniform(-1, 1, (5, 3)))
    batch = np.einsum("bij,vj->bvi", rots, mesh.vertices) * 3.0
    aligned, scale, _, _ = align_to_canonical(batch, mesh)
    assert aligned.shape == (5, 468, 3) and scale.shape == (5,)
    np.testing.assert_allclose(aligned, np.broadcast_to(mesh.vertices, aligned.shape), atol=1e-4)
    # A mirror image cannot be reached by a proper rotation: the fit stays a rotation.
    _, _, r, _ = align_to_canonical(mesh.vertices * np.array([-1, 1, 1]) + [0, 0, 1], mesh)
    assert np.isclose(np.linalg.det(r), 1.0)


def test_observation_points_axes() -> None:
    lm = np.zeros((478, 3))
    lm[0] = (0.5, 0.25, -0.1)
    pts = observation_points(lm, (400, 300))
    assert pts.shape == (468, 3)
    np.testing.assert_allclose(pts[0], (200.0, -75.0, 40.0))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    head = _varint(number << 3 | wire)
    return head + (_varint(len(payload)) + payload if wire == 2 else payload)


def test_packed_encoding_reads_the_same(mesh) -> None:
    """The file stores repeated fields unpacked; a packed encoding must parse identically."""
    vb = np.concatenate([mesh.vertices, mesh.uvs], axis=1).astype("<f4").tobytes()
    ib = b"".join(_varint(int(i)) for i in mesh.triangles.reshape(-1))
    body = _field(1, 0, _varint(0)) + _field(2, 0, _varint(0)) + _field(3, 2, vb)
    body += _field(4, 2, ib)
    data = _field(1, 2, body) + _field(3, 0, _varint(1))
    for i, w in zip(mesh.procrustes_ids, mesh.procrustes_weights, strict=True):
        data += _field(2, 2, _field(1, 0, _varint(int(i))) + _field(2, 5, struct.pack("<f", w)))
    packed = parse_geometry_metadata(data)
    np.testing.assert_array_equal(packed.vertices, mesh.vertices)
    np.testing.assert_array_equal(packed.uvs, mesh.uvs)
    np.testing.assert_array_equal(packed.triangles, mesh.triangles)
    np.testing.assert_array_equal(packed.procrustes_ids, mesh.procrustes_ids)
    np.testing.assert_array_equal(packed.procrustes_weights, mesh.procrustes_weights)


def test_bad_data_fails_clearly() -> None:
    raw = read_member(resolve_task_path(), GEOMETRY_MEMBER)
    with pytest.raises(MeshFormatError, match="past the end|truncated"):
        parse_geometry_metadata(raw[:-7])
    with pytest.raises(MeshFormatError, match="canonical_mesh"):
        parse_geometry_metadata(b"")
