"""``rapport face export``: the GLB a browser loads, from the bundled model or another one."""

from __future__ import annotations

import numpy as np

from models.face import layout
from models.face.face_model import load_default_face_model
from models.face.gltf import read_accessor, read_glb
from server.cli import main


def test_face_export_writes_a_glb_with_the_52_arkit_targets(tmp_path) -> None:
    out = tmp_path / "sub" / "face.glb"
    assert main(["-q", "face", "export", "--out", str(out)]) == 0
    doc, blob = read_glb(out)
    mesh = doc["meshes"][0]
    assert mesh["extras"]["targetNames"] == list(layout.BLENDSHAPE_NAMES)
    prim = mesh["primitives"][0]
    assert len(prim["targets"]) == 52
    assert read_accessor(doc, blob, prim["attributes"]["POSITION"]).shape == (468, 3)
    assert read_accessor(doc, blob, prim["indices"]).size == 898 * 3
    model = load_default_face_model()
    jaw = read_accessor(doc, blob, prim["targets"][layout.index("jawOpen")]["POSITION"])
    np.testing.assert_allclose(jaw, model.morph("jawOpen"), atol=1e-6)
    assert np.abs(jaw).max() > 0.5  # the jaw really opens (cm)


def test_face_export_with_a_missing_model_file_is_a_clear_error(tmp_path, caplog) -> None:
    out = tmp_path / "face.glb"
    code = main(["-q", "face", "export", "--model", str(tmp_path / "nope.npz"), "--out", str(out)])
    assert code == 2 and "nope.npz" in caplog.text and not out.exists()
