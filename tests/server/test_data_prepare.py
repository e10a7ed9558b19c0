"""``prepare_tree`` on a tiny REACT-shaped release: both modes, resume, parallel = serial."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.data import react_layout as rl
from models.data.dataset import ReactDataset
from models.data.emotion import emotion_from_coefficients
from models.data.faceverse import FaceVerseMapping
from models.data.io import DatasetError
from models.face import layout
from server.data_prepare import REPORT_FILE, prepare_tree
from server.perception.files import extract_face
from server.perception.video import MediaError, PngFrames, iter_png_frames
from tests.conftest import place, write_video
from tests.react_tree import CLIPS, FRAMES, NO_EMOTION, PAIRS, SPLIT


@pytest.fixture(scope="module")
def mapping(react_release) -> FaceVerseMapping:
    return FaceVerseMapping.from_files(react_release.names_file, react_release.mean_face_file)


@pytest.fixture(scope="module")
def prepared(react_release, tmp_path_factory) -> tuple[Path, dict]:
    """The perception-mode preparation, two worker processes."""
    out = tmp_path_factory.mktemp("prepared") / "tree"
    return out, prepare_tree(react_release.root, out, workers=2, progress=False)


def files_of(tree: Path, clips: list[str], *, found: bool = True) -> dict[str, bytes]:
    paths = rl.SplitPaths(tree, SPLIT)
    out = {}
    for clip in clips:
        out[f"{clip}.npy"] = paths.coeffs(clip).read_bytes()
        out[f"{clip}.csv"] = paths.emotion(clip).read_bytes()
        if found:
            out[f"{clip}.found"] = (
                paths.coeffs(clip).with_name(Path(clip).name + ".found.npy").read_bytes()
            )
    return out


def test_perception_tree_loads_with_every_field(prepared, react_release, mapping) -> None:
    out, summary = prepared
    assert (summary["clips"], summary["prepared"], summary["skipped"], summary["failed"]) == (
        8,
        8,
        0,
        0,
    )
    meta = json.loads((out / rl.META_FILE).read_text())
    assert meta["space"] == rl.SPACE_RAPPORT and meta["mode"] == "perception" and meta["complete"]
    assert meta["source"] == str(react_release.root.resolve()) and meta["date"][:2] == "20"
    for name in ("val.csv", "neighbour_emotion_val.npy", "traits.csv"):
        assert (out / name).read_bytes() == (react_release.root / name).read_bytes()
    report = json.loads((out / REPORT_FILE).read_text())
    assert len(report["records"]) == 8 and all(r["face_found"] == 1.0 for r in report["records"])
    ours = ReactDataset(out, SPLIT)
    theirs = ReactDataset(react_release.root, SPLIT, faceverse=mapping)
    assert ours.space == rl.SPACE_RAPPORT and len(ours) == 8 and ours.persons == theirs.persons
    np.testing.assert_array_equal(ours.neighbours, react_release.neighbours)
    for person in ours.persons:
        np.testing.assert_array_equal(ours.traits(person), theirs.traits(person))
    jaw = []
    for clip_path in CLIPS:
        clip, source = ours.clip(clip_path), theirs.clip(clip_path)
        assert clip.coeffs.shape == (FRAMES, 58) and clip.coeffs.dtype == np.float32
        layout.validate(clip.coeffs)
        assert clip.found.all() and clip.valid.all()
        assert np.ptp(clip.coeffs[:, layout.DETECTED_BLENDSHAPES], axis=0).max() > 0.05
        jaw.append(np.ptp(clip.coeffs[:, layout.index("jawOpen")]))
        assert not clip.emotion_derived  # written by prepare, derived from our coefficients
        np.testing.assert_allclose(clip.emotion, emotion_from_coefficients(clip.coeffs), atol=1e-5)
        release_csv = out / SPLIT / "Emotion_release" / f"{clip_path}.csv"
        if clip_path == NO_EMOTION:
            assert not release_csv.exists()
        else:
            assert release_csv.read_bytes() == theirs.paths.emotion(clip_path).read_bytes()
        np.testing.assert_array_equal(clip.audio_features, source.audio_features)
        np.testing.assert_array_equal(clip.audio_valid, source.audio_valid)
        assert clip.video.kind == source.video.kind
        assert clip.video.path.resolve() == source.video.path.resolve()
    assert max(jaw) > 0.15  # a real talking face


def test_perception_coefficients_are_extract_face(prepared, react_release) -> None:
    out, _ = prepared
    clip = PAIRS[2][0]  # a PNG-folder clip
    coeffs, found, _, _ = extract_face(
        PngFrames(rl.SplitPaths(react_release.root, SPLIT).video_frames_dir(clip))
    )
    paths = rl.SplitPaths(out, SPLIT)
    np.testing.assert_allclose(np.load(paths.coeffs(clip)), coeffs, atol=1e-6)
    np.testing.assert_array_equal(np.load(paths.coeffs(clip).with_name("1.found.npy")), found)


def test_serial_equals_parallel_and_resume(prepared, react_release, tmp_path) -> None:
    """One pair with an mp4 and a PNG clip, prepared serially, equals the parallel outputs."""
    parallel, _ = prepared
    source = tmp_path / "subset"
    source.mkdir()
    (source / SPLIT).symlink_to(react_release.root / SPLIT)
    clips = [PAIRS[0][0], PAIRS[2][1]]
    (source / "val.csv").write_text(f",speaker,listener\n0,{clips[0]},{clips[1]}\n")
    out = tmp_path / "serial"
    summary = prepare_tree(source, out, workers=1, progress=False)
    assert (summary["prepared"], summary["failed"]) == (2, 0)
    assert files_of(out, clips) == files_of(parallel, clips)
    paths = rl.SplitPaths(out, SPLIT)
    stamps = {c: paths.coeffs(c).stat().st_mtime_ns for c in clips}
    again = prepare_tree(source, out, workers=2, progress=False)
    assert (again["prepared"], again["skipped"]) == (0, 2)
    assert stamps == {c: paths.coeffs(c).stat().st_mtime_ns for c in clips}
    before = files_of(out, clips)
    paths.coeffs(clips[1]).with_name("1.found.npy").unlink()  # an interrupted clip
    (paths.coeffs(clips[1]).parent / ".1.npy.tmp-123").write_bytes(b"half")
    redo = prepare_tree(source, out, workers=2, progress=False)
    assert (redo["prepared"], redo["skipped"]) == (1, 1)
    assert redo["seconds"] > 0 and files_of(out, clips) == before
    assert stamps[clips[0]] == paths.coeffs(clips[0]).stat().st_mtime_ns


def test_dataset_3dmm_mode(react_release, mapping, tmp_path) -> None:
    with pytest.raises(DatasetError, match="needs the expression name list"):
        prepare_tree(react_release.root, tmp_path / "x", use_dataset_3dmm=True, progress=False)
    out = tmp_path / "fv"
    summary = prepare_tree(react_release.root, out, use_dataset_3dmm=True, faceverse=mapping,
                           workers=1, progress=False)  # fmt: skip
    assert (summary["prepared"], summary["failed"], summary["mode"]) == (8, 0, "dataset-3dmm")
    ours = ReactDataset(out, SPLIT)
    theirs = ReactDataset(react_release.root, SPLIT, faceverse=mapping)
    for i in range(len(ours)):
        a, b = ours[i], theirs[i]
        for x, y in ((a.speaker, b.speaker), (a.listener, b.listener)):
            assert x.path == y.path
            np.testing.assert_array_equal(x.coeffs, y.coeffs)
            np.testing.assert_allclose(x.emotion, emotion_from_coefficients(y.coeffs), atol=1e-5)
            assert x.found.all() and not list(out.rglob("*.found.npy"))
            np.testing.assert_array_equal(x.audio_features, y.audio_features)
    with pytest.raises(DatasetError, match="holds a 'dataset-3dmm' preparation .* use another"):
        prepare_tree(react_release.root, out, progress=False)


def test_failed_clips_are_reported_and_the_run_goes_on(tmp_path) -> None:
    root = tmp_path / "release"
    paths = rl.SplitPaths(root, "train")
    noise, missing = "NoXI/s/Expert_video/1", "NoXI/s/Novice_video/1"
    paths.video_file(noise).parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_video(
        paths.video_file(noise),
        [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(8)],
    )
    (root / "train.csv").write_text(f"i,s,l\n0,{noise},{missing}\n")
    summary = prepare_tree(root, tmp_path / "out", workers=1, progress=False)
    assert (summary["prepared"], summary["failed"]) == (0, 2)
    errors = {f["clip"]: f["error"] for f in summary["failures"]}
    assert "no face found in any of its 8 frames" in errors[noise]
    assert f"train/Video_files/{missing}.mp4: no such file (nor a folder" in errors[missing]
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert report["failed"] == 2
    assert not json.loads((tmp_path / "out" / rl.META_FILE).read_text())["complete"]


def test_pairs_with_failed_clips_are_dropped_so_the_tree_loads(tmp_path, astronaut) -> None:
    root = tmp_path / "release"
    paths = rl.SplitPaths(root, "train")
    face = place(np.ascontiguousarray(astronaut[40:300, 120:340]), (300, 400), 90, 20)
    good = ["NoXI/a/Expert_video/1", "NoXI/a/Novice_video/1"]
    bad = "NoXI/b/Expert_video/1"
    rng = np.random.default_rng(0)
    for clip in good:
        paths.video_file(clip).parent.mkdir(parents=True, exist_ok=True)
        write_video(paths.video_file(clip), [face] * 6)
    paths.video_file(bad).parent.mkdir(parents=True, exist_ok=True)
    write_video(
        paths.video_file(bad),
        [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(6)],
    )
    (root / "train.csv").write_text(f"i,s,l\n0,{good[0]},{good[1]}\n1,{bad},{good[1]}\n")
    neighbours = np.eye(4, dtype=bool)
    neighbours[0, 1] = neighbours[1, 0] = True  # pair 0 as written ~ pair 1 as written
    np.save(root / "neighbour_emotion_train.npy", neighbours)
    out = tmp_path / "out"
    summary = prepare_tree(root, out, workers=1, progress=False)
    assert (summary["prepared"], summary["failed"]) == (2, 1)
    assert summary["dropped_pairs"] == {"train": [3]}  # csv line 3 held the failed clip
    ds = ReactDataset(out, "train", audio=False)
    assert len(ds) == 2
    assert (ds.pairs[0].speaker, ds.pairs[0].listener) == tuple(good)
    np.testing.assert_array_equal(ds.neighbours, np.eye(2, dtype=bool))


def test_png_frame_folders(tmp_path) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (16, 24, 3), dtype=np.uint8) for _ in range(3)]
    for k, rgb in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{k}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("ignored")
    shutil.copy(folder / "3.png", folder / "10.png")
    with pytest.raises(MediaError, match=r"clip: frame 4.png is missing \(frames run 1..10\)"):
        list(iter_png_frames(folder))
    os.remove(folder / "10.png")
    read = list(PngFrames(folder)())
    assert [k for k, _ in read] == [0, 1, 2]
    for (_, rgb), expected in zip(read, frames, strict=True):
        np.testing.assert_array_equal(rgb, expected)
    with pytest.raises(MediaError, match="no such folder"):
        list(iter_png_frames(tmp_path / "nope"))


def test_cli_prepare_with_the_dataset_3dmm(react_release, tmp_path, caplog) -> None:
    from server.cli import main

    out = tmp_path / "cli_out"
    argv = ["-q", "data", "prepare", "--react-root", str(react_release.root), "--out", str(out),
            "--use-dataset-3dmm", "--faceverse-names", str(react_release.names_file),
            "--mean-face", str(react_release.mean_face_file), "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    ds = ReactDataset(out, SPLIT, audio=False)
    assert len(ds) == 2 * len(PAIRS) and ds.space == rl.SPACE_RAPPORT
    # Without the name list the same command explains what is missing.
    assert main(argv[:8] + ["--workers", "1"]) == 2
    assert "expression name list" in caplog.text
