"""The face GLB: a valid glTF 2.0 binary that three.js can load with named morph targets."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from models.face import layout
from models.face.face_model import FaceModel, load_default_face_model
from models.face.gltf import (
    CHUNK_BIN,
    CHUNK_JSON,
    GLB_MAGIC,
    GlbError,
    read_accessor,
    read_glb,
    write_face_glb,
)
from models.face.mesh import vertex_normals


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_default_face_model()


@pytest.fixture(scope="module")
def glb(model, tmp_path_factory):
    path = write_face_glb(model, tmp_path_factory.mktemp("glb") / "face.glb")
    doc, blob = read_glb(path)
    return path, doc, blob


def test_container_layout(glb) -> None:
    path, _, _ = glb
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (GLB_MAGIC, 2, len(data))
    assert data[:4] == b"glTF" and len(data) % 4 == 0
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == CHUNK_JSON and json_len % 4 == 0
    json.loads(data[20 : 20 + json_len])  # padded with spaces: still valid JSON
    bin_at = 20 + json_len
    bin_len, bin_type = struct.unpack_from("<II", data, bin_at)
    assert bin_type == CHUNK_BIN and bin_len % 4 == 0
    assert bin_at + 8 + bin_len == len(data)


def test_scene_and_mesh(glb) -> None:
    _, doc, blob = glb
    assert doc["asset"]["version"] == "2.0"
    [node] = doc["nodes"]
    assert node["name"] == "face" and node["mesh"] == 0
    np.testing.assert_allclose(node["scale"], [0.01] * 3)  # cm → m
    [mesh] = doc["meshes"]
    [prim] = mesh["primitives"]
    assert mesh["extras"]["targetNames"] == list(layout.BLENDSHAPE_NAMES)
    assert mesh["weights"] == [0.0] * 52 and len(prim["targets"]) == 52
    assert prim["mode"] == 4 and set(prim["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}
    material = doc["materials"][prim["material"]]
    assert material["doubleSided"] is False
    assert doc["buffers"] == [{"byteLength": len(blob)}]


def test_views_and_accessors_in_bounds(glb) -> None:
    _, doc, blob = glb
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
        assert view["byteOffset"] + view["byteLength"] <= len(blob)
    prim = doc["meshes"][0]["primitives"][0]
    vertex_accessors = list(prim["attributes"].values()) + [t["POSITION"] for t in prim["targets"]]
    for index in vertex_accessors:
        assert doc["accessors"][index]["count"] == 468
    assert doc["accessors"][prim["indices"]]["count"] == 898 * 3


def test_positions_and_morphs_decode(glb, model) -> None:
    _, doc, blob = glb
    prim = doc["meshes"][0]["primitives"][0]
    positions = [prim["attributes"]["POSITION"]] + [t["POSITION"] for t in prim["targets"]]
    for index in positions:
        acc = doc["accessors"][index]
        values = read_accessor(doc, blob, index)
        assert (
            acc["min"] == values.min(axis=0).tolist() and acc["max"] == values.max(axis=0).tolist()
        )
    np.testing.assert_array_equal(read_accessor(doc, blob, positions[0]), model.neutral)
    morphs = np.stack([read_accessor(doc, blob, i) for i in positions[1:]])
    np.testing.assert_array_equal(morphs, model.morphs)
    uv = read_accessor(doc, blob, prim["attributes"]["TEXCOORD_0"])
    np.testing.assert_array_equal(uv, model.uvs)


def test_winding_faces_outward(glb, model) -> None:
    _, doc, blob = glb
    prim = doc["meshes"][0]["primitives"][0]
    tri = read_accessor(doc, blob, prim["indices"]).reshape(-1, 3).astype(np.int64)
    assert tri.max() < 468
    normals = read_accessor(doc, blob, prim["attributes"]["NORMAL"])
    np.testing.assert_allclose(normals, vertex_normals(model.neutral, tri), atol=1e-6)
    # Counter-clockwise triangles (glTF front faces) face the camera, +z, on a frontal face.
    v = model.neutral[tri]
    face_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    assert (face_z > 0).mean() > 0.9


def test_inward_model_gets_flipped(model, tmp_path) -> None:
    inward = FaceModel(model.neutral, model.morphs, model.triangles[:, ::-1].copy(), model.uvs)
    doc, blob = read_glb(write_face_glb(inward, tmp_path / "f.glb"))
    prim = doc["meshes"][0]["primitives"][0]
    tri = read_accessor(doc, blob, prim["indices"]).reshape(-1, 3)
    np.testing.assert_array_equal(tri, model.triangles)


def test_read_glb_rejects_garbage(tmp_path) -> None:
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"not a glb file at all")
    with pytest.raises(GlbError, match="glTF 2.0"):
        read_glb(bad)
