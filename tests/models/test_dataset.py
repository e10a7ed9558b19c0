"""ReactDataset on a tiny REACT2024-shaped release tree: every field, errors, history, windows."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from models.data import react_layout as rl
from models.data.dataset import ReactDataset
from models.data.emotion import emotion_from_coefficients
from models.data.faceverse import XY_SCALE, FaceVerseMapping, load_expression_names, wrap_angle
from models.data.io import DatasetError, read_pairs, write_emotion
from models.data.torch_windows import WindowDataset
from models.data.windows import AUDIO_LOOKAHEAD
from models.face import layout
from models.features.mfcc import mfcc_features, resample_to_16k, to_mono
from tests.react_tree import (
    CLIPS,
    FLAT_NPY,
    FRAMES,
    NO_EMOTION,
    PAIRS,
    PERSONS,
    SHORT_AUDIO,
    SPLIT,
)


@pytest.fixture(scope="module")
def mapping(react_release) -> FaceVerseMapping:
    return FaceVerseMapping.from_files(react_release.names_file, react_release.mean_face_file)


@pytest.fixture(scope="module")
def release(react_release, mapping) -> ReactDataset:
    return ReactDataset(react_release.root, SPLIT, faceverse=mapping)


def copy_tree(src: Path, dst: Path) -> Path:
    """The release tree without its videos (for trees a test modifies)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("Video_files"))
    return dst


def expected_rapport(fv: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The documented mapping, written out independently of FaceVerseMapping."""
    out = np.zeros((len(fv), 58))
    for j, name in enumerate(names):
        out[:, layout.BLENDSHAPE_NAMES.index(name)] = np.clip(fv[:, j], 0, 1)
    out[:, 52:55] = np.angle(np.exp(1j * (fv[:, 52:55] - [np.pi, 0, 0])))
    out[:, 55:57] = XY_SCALE * (fv[:, 55:57] - fv[:, 55:57].mean(axis=0))
    log_d = np.log(10.0 - fv[:, 57].astype(np.float64))
    out[:, 57] = np.median(log_d) - log_d
    return out


def wav_features_of(path: Path) -> np.ndarray:
    pcm, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return mfcc_features(resample_to_16k(to_mono(pcm), rate))


# -- (a) every field on the release tree ----------------------------------------------------------


def test_release_tree_samples_in_mirrored_order(release) -> None:
    assert len(release) == 2 * len(PAIRS)
    for i in range(len(release)):
        sample = release[i]
        speaker, listener = PAIRS[i % len(PAIRS)]
        if i >= len(PAIRS):
            speaker, listener = listener, speaker
        assert (sample.index, sample.pair, sample.mirrored) == (i, i % 4, i >= 4)
        assert (sample.speaker.path, sample.listener.path) == (speaker, listener)
        assert sample.speaker.person == rl.person_id(speaker)
        assert sample.listener.person == rl.person_id(listener)
    assert release[-1].index == 7
    with pytest.raises(IndexError):
        release[8]


def test_release_tree_every_clip_field(release, react_release) -> None:
    for clip_path in CLIPS:
        clip = release.clip(clip_path)
        assert clip.path == clip_path and clip.person == rl.person_id(clip_path)
        assert clip.coeffs.shape == (FRAMES, 58) and clip.coeffs.dtype == np.float32
        np.testing.assert_allclose(clip.coeffs, expected_rapport(react_release.faceverse[clip_path],
                                   react_release.names), atol=1e-5)  # fmt: skip
        layout.validate(clip.coeffs)
        assert clip.emotion.shape == (FRAMES, 25) and clip.emotion.dtype == np.float32
        if clip_path == NO_EMOTION:
            assert clip.emotion_derived
            np.testing.assert_allclose(clip.emotion, emotion_from_coefficients(clip.coeffs))
        else:
            assert not clip.emotion_derived
            np.testing.assert_allclose(clip.emotion, react_release.emotion[clip_path], atol=1e-5)
        wav = release.paths.audio(clip_path)
        feats = wav_features_of(wav)
        n = min(len(feats), FRAMES)
        assert clip.audio_features.shape == (FRAMES, 78) and clip.audio_features.dtype == np.float32
        np.testing.assert_allclose(clip.audio_features[:n], feats[:n], atol=1e-5)
        assert not clip.audio_features[n:].any()
        expected_audio = 30 if clip_path == SHORT_AUDIO else FRAMES  # 1.2 s of audio
        np.testing.assert_array_equal(clip.audio_valid, np.arange(FRAMES) < expected_audio)
        assert clip.valid.all() and clip.found.all() and clip.real_frames == FRAMES
        if clip_path.startswith("NoXI"):
            assert clip.video.kind == "mp4"
            assert clip.video.path == release.paths.video_file(clip_path)
        else:
            assert clip.video.kind == "png"
            assert (clip.video.path / "1.png").is_file() and (clip.video.path / f"{FRAMES}.png")


def test_release_tree_persons_neighbours_traits(release, react_release) -> None:
    assert release.persons == PERSONS
    for person in PERSONS:
        assert release.clips_of(person) == [f"{person}/1", f"{person}/2"]
        np.testing.assert_allclose(release.traits(person), react_release.traits[person], atol=1e-6)
    with pytest.raises(KeyError, match="has no clip"):
        release.clips_of("NoXI/001_2016-03-17_Paris/Nobody")
    assert release.neighbours.dtype == bool
    np.testing.assert_array_equal(release.neighbours, react_release.neighbours)
    assert release.check() == len(CLIPS)


def test_mirror_false_frames_and_audio_switches(react_release, mapping) -> None:
    plain = ReactDataset(react_release.root, SPLIT, faceverse=mapping, mirror=False)
    assert len(plain) == 4 and not any(s.mirrored for s in plain)
    np.testing.assert_array_equal(plain.neighbours, react_release.neighbours[:4, :4])
    full = ReactDataset(react_release.root, SPLIT, faceverse=mapping)[1]
    short = ReactDataset(react_release.root, SPLIT, faceverse=mapping, frames=40)[1]
    np.testing.assert_array_equal(short.listener.coeffs, full.listener.coeffs[:40])
    assert short.listener.valid.all() and len(short.listener.emotion) == 40
    long = ReactDataset(react_release.root, SPLIT, faceverse=mapping, frames=60)[1]
    for a, b in ((long.listener.coeffs, full.listener.coeffs), (long.speaker.emotion,
                                                               full.speaker.emotion)):
        np.testing.assert_array_equal(a[:FRAMES], b)
        np.testing.assert_array_equal(a[FRAMES:], np.repeat(b[-1:], 60 - FRAMES, axis=0))
    np.testing.assert_array_equal(long.speaker.valid, np.arange(60) < FRAMES)
    assert long.speaker.path == SHORT_AUDIO
    np.testing.assert_array_equal(long.speaker.audio_valid, np.arange(60) < 30)
    quiet = ReactDataset(react_release.root, SPLIT, faceverse=mapping, audio=False)[0]
    assert quiet.speaker.audio_features is None and quiet.speaker.audio_valid is None


def test_audio_feature_cache(react_release, mapping, tmp_path, monkeypatch) -> None:
    root = copy_tree(react_release.root, tmp_path / "tree")
    cache = tmp_path / "cache"
    first = ReactDataset(root, SPLIT, faceverse=mapping, cache_dir=cache)[0].speaker
    assert len(list(cache.glob("*.npy"))) == 2
    monkeypatch.setattr("models.data.io.mfcc_features", lambda *a: 1 / 0)  # must not be called
    again = ReactDataset(root, SPLIT, faceverse=mapping, cache_dir=cache)[0].speaker
    np.testing.assert_array_equal(again.audio_features, first.audio_features)
    wav = rl.SplitPaths(root, SPLIT).audio(PAIRS[0][0])
    os.utime(wav, ns=(0, 0))  # a changed file is recomputed
    with pytest.raises(ZeroDivisionError):
        ReactDataset(root, SPLIT, faceverse=mapping, cache_dir=cache)[0]


# -- the FaceVerse mapping ------------------------------------------------------------------------


def test_mapping_mean_subtracted_names_and_wrapping(react_release, mapping, tmp_path) -> None:
    fv = react_release.faceverse[CLIPS[0]]
    mean = np.load(react_release.mean_face_file)
    sub = FaceVerseMapping.from_files(react_release.names_file, react_release.mean_face_file,
                                      mean_subtracted=True)  # fmt: skip
    np.testing.assert_allclose(sub.to_rapport(fv - mean), mapping.to_rapport(fv), atol=1e-5)
    text = tmp_path / "names.txt"
    text.write_text("\n".join(react_release.names))
    assert load_expression_names(text) == react_release.names
    np.testing.assert_allclose(wrap_angle(np.array([np.pi, -np.pi, 1.5 * np.pi, 0.3])),
                               [np.pi, np.pi, -0.5 * np.pi, 0.3])  # fmt: skip
    with pytest.raises(ValueError, match="expected 52 names, got 51"):
        FaceVerseMapping(react_release.names[:51])
    with pytest.raises(ValueError, match="'smile' is not an ARKit blendshape"):
        FaceVerseMapping(("smile", *react_release.names[1:]))
    with pytest.raises(ValueError, match="needs the mean_face"):
        FaceVerseMapping(react_release.names, mean_subtracted=True)


def test_faceverse_tree_without_mapping_is_a_clear_error(react_release) -> None:
    with pytest.raises(DatasetError, match="pass a FaceVerseMapping.*rapport data prepare"):
        ReactDataset(react_release.root, SPLIT)


# -- (c) validation names file and field ----------------------------------------------------------


def test_pairs_csv_forms(tmp_path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("id,speaker,listener\n0,/NoXI/s/Expert_video/3.mp4,NoXI/s/Novice_video/3/\n"
                    "\n1,x,RECOLA/g/P25/1,RECOLA\\g\\P26\\1.wav\n")  # fmt: skip
    rows = read_pairs(path)
    assert [(r.row, r.speaker, r.listener) for r in rows] == [
        (2, "NoXI/s/Expert_video/3", "NoXI/s/Novice_video/3"),
        (4, "RECOLA/g/P25/1", "RECOLA/g/P26/1"),
    ]
    path.write_text("h\n0,NoXI/s/Expert_video/3,NoXI/s/Novice_video/3\n1,a/b,NoXI/s/N/3\n")
    with pytest.raises(DatasetError, match=r"train.csv row 3: speaker clip 'a/b' is not <site>"):
        read_pairs(path)
    path.write_text("h\n0\n")
    with pytest.raises(DatasetError, match="row 2: expected .* got 1 field"):
        read_pairs(path)


@pytest.fixture
def broken(react_release, tmp_path):
    """A modifiable copy of the release tree and a loader factory for it."""
    root = copy_tree(react_release.root, tmp_path / "tree")
    paths = rl.SplitPaths(root, SPLIT)
    mapping = FaceVerseMapping.from_files(react_release.names_file, react_release.mean_face_file)

    def load(**kwargs):
        return ReactDataset(root, SPLIT, faceverse=mapping, audio=False, **kwargs)

    return root, paths, load


def test_bad_coefficient_files_name_file_and_field(broken, react_release) -> None:
    root, paths, load = broken
    clip = PAIRS[0][1]
    np.save(paths.coeffs(clip), np.zeros((51, 57), np.float32))
    with pytest.raises(DatasetError, match=rf"^val/3D_FV_files/{clip}.npy: expected \(T, 58\) "
                       r"or \(T, 1, 58\), got \(51, 57\)"):  # fmt: skip
        load()[0]
    fv = react_release.faceverse[clip].copy()
    fv[7, 3] = np.nan
    np.save(paths.coeffs(clip), fv)
    with pytest.raises(DatasetError, match=rf"{clip}.npy: non-finite value nan at frame 7, "
                       f"{react_release.names[3]}"):  # fmt: skip
        load()[0]
    paths.coeffs(clip).write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match=rf"{clip}.npy: not a readable .npy"):
        load()[0]
    paths.coeffs(clip).unlink()
    with pytest.raises(DatasetError, match=rf"^val.csv row 2: listener clip '{clip}' has no "
                       rf"val/3D_FV_files/{clip}.npy"):  # fmt: skip
        load()


def test_bad_emotion_neighbours_traits_audio(broken, react_release) -> None:
    root, paths, load = broken
    clip = PAIRS[0][0]
    emotion = paths.emotion(clip)
    lines = emotion.read_text().splitlines()
    lines[4] = ",".join(lines[4].split(",")[:24])
    emotion.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=rf"^val/Emotion/{clip}.csv row 5: 24 values, "
                       "expected 25"):  # fmt: skip
        load()[0]
    lines[4] = ",".join(["0.5"] * 24 + ["abc"])
    emotion.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"row 5, Contempt: 'abc' is not a number"):
        load()[0]
    write_emotion(emotion, np.zeros((FRAMES - 1, 25)))
    with pytest.raises(DatasetError, match=rf"{clip}.csv: {FRAMES - 1} frames, but the clip's "
                       f"coefficients have {FRAMES}"):  # fmt: skip
        load()[0]
    emotion.unlink()
    np.save(paths.neighbours, np.zeros((6, 6), bool))
    with pytest.raises(DatasetError, match=r"^neighbour_emotion_val.npy: shape \(6, 6\) but the "
                       "split has 8 mirrored samples"):  # fmt: skip
        load()
    np.save(paths.neighbours, np.full((8, 8), 0.5))
    with pytest.raises(DatasetError, match=r"entries must be 0 or 1, found 0.5 at \[0, 0\]"):
        load()
    paths.neighbours.unlink()
    assert load().neighbours is None
    (root / "traits.csv").write_text("person_id,openness\nX,0.5\n")
    with pytest.raises(DatasetError, match="^traits.csv: no column 'conscientiousness'"):
        load().traits(PERSONS[0])
    (root / "traits.csv").write_text("person_id,openness,conscientiousness,extraversion,"
                                     "agreeableness,neuroticism\nX,0.5,0.5,1.5,0.5,0.5\n")
    with pytest.raises(DatasetError, match=r"traits.csv row 2, extraversion: '1.5' is not a"):
        load().traits(PERSONS[0])
    (root / "traits.csv").unlink()
    assert load().traits(PERSONS[0]) is None
    paths.audio(clip).write_bytes(b"RIFF garbage")
    with pytest.raises(DatasetError, match=rf"^val/Audio_files/{clip}.wav: cannot read as audio"):
        ReactDataset(root, SPLIT, faceverse=load().faceverse)[0]


def test_rapport_tree_checks_ranges_and_found_masks(broken) -> None:
    root, paths, _ = broken
    rl.write_meta(root, {"space": rl.SPACE_RAPPORT})
    for clip in CLIPS:
        np.save(paths.coeffs(clip), np.full((FRAMES, 58), 0.2, np.float32))
    clip = PAIRS[0][0]
    bad = np.full((FRAMES, 58), 0.2, np.float32)
    bad[3, layout.index("jawOpen")] = 1.5
    np.save(paths.coeffs(clip), bad)
    with pytest.raises(DatasetError, match=rf"{clip}.npy: jawOpen = 1.5000 at frame 3 is outside"):
        ReactDataset(root, SPLIT)[0]
    np.save(paths.coeffs(clip), bad[:, None, :] * 0 + 0.2)
    np.save(paths.coeffs(clip).with_name("1.found.npy"), np.ones(FRAMES + 1, bool))
    with pytest.raises(DatasetError, match=rf"{clip}.found.npy: expected \({FRAMES},\)"):
        ReactDataset(root, SPLIT)[0]
    found = np.arange(FRAMES) % 5 != 0
    np.save(paths.coeffs(clip).with_name("1.found.npy"), found)
    np.testing.assert_array_equal(ReactDataset(root, SPLIT)[0].speaker.found, found)
    (root / rl.META_FILE).write_text(json.dumps({"space": "arkit"}))
    with pytest.raises(DatasetError, match="rapport.json: field 'space' must be"):
        ReactDataset(root, SPLIT)


# -- (d) history and online windows ---------------------------------------------------------------


def test_history_comes_from_another_clip_of_the_listener(release, react_release, tmp_path) -> None:
    rng = np.random.default_rng(3)
    for i in range(len(release)):
        own = release.pair_clips(i)[1]
        other = [c for c in release.clips_of(rl.person_id(own)) if c != own][0]
        whole = release.clip(other).coeffs
        for _ in range(5):
            hist = release.history(i, 1.0, rng)
            assert hist.shape == (25, 58)
            starts = [s for s in range(FRAMES - 24) if np.array_equal(whole[s: s + 25], hist)]
            assert len(starts) == 1
    with pytest.raises(DatasetError, match="shorter than 250 frames"):
        release.history(0, 10.0, rng)
    root = copy_tree(react_release.root, tmp_path / "one_pair")
    (root / "val.csv").write_text(f",s,l\n0,{PAIRS[0][0]},{PAIRS[0][1]}\n")
    (root / "neighbour_emotion_val.npy").unlink()
    one = ReactDataset(root, SPLIT, faceverse=release.faceverse)
    with pytest.raises(DatasetError, match=r"listener .*Novice_video has no clip in split 'val' "
                       "other than"):  # fmt: skip
        one.history(0, 1.0, rng)
    hist = one.history(0, 1.0, rng, same_clip_ok=True)
    own = one.clip(PAIRS[0][1]).coeffs
    assert any(np.array_equal(own[s: s + 25], hist) for s in range(FRAMES - 24))


@pytest.fixture
def rapport_tree(react_release, mapping, tmp_path) -> Path:
    """The release in our space, with 16 kHz mono wavs (no resampling: exact audio causality)."""
    root = copy_tree(react_release.root, tmp_path / "r58")
    rl.write_meta(root, {"space": rl.SPACE_RAPPORT})
    paths = rl.SplitPaths(root, SPLIT)
    for clip in CLIPS:
        np.save(paths.coeffs(clip), mapping.to_rapport(react_release.faceverse[clip]))
        pcm, rate = soundfile.read(paths.audio(clip), dtype="float32", always_2d=True)
        soundfile.write(paths.audio(clip), resample_to_16k(to_mono(pcm), rate), 16_000,
                        subtype="FLOAT")  # fmt: skip
    return root


def windows_equal(a, b) -> bool:
    names = ("speaker_audio", "audio_valid", "speaker_face", "context_valid", "listener_prev",
             "prev_valid", "target", "target_valid")  # fmt: skip
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in names)


def test_windows_are_strictly_causal(rapport_tree) -> None:
    paths = rl.SplitPaths(rapport_tree, SPLIT)
    speaker, listener = PAIRS[0]
    t = 30
    base = ReactDataset(rapport_tree, SPLIT).window(0, t, w=8, context=20, prev=6)
    assert base.speaker_face.shape == (20, 58) and base.speaker_audio.shape == (20, 78)
    assert base.listener_prev.shape == (6, 58) and base.target.shape == (8, 58)
    assert base.context_valid.all() and base.prev_valid.all() and base.target_valid.all()
    np.testing.assert_array_equal(base.audio_valid, np.arange(20) < 20 - AUDIO_LOOKAHEAD)

    def changed(path: Path, frame: int) -> bool:
        original = np.load(path)
        edited = original.copy()
        edited[frame, :52] = 1.0 - edited[frame, :52]
        np.save(path, edited)
        window = ReactDataset(rapport_tree, SPLIT).window(0, t, w=8, context=20, prev=6)
        np.save(path, original)
        return not windows_equal(window, base)

    assert not changed(paths.coeffs(speaker), t) and changed(paths.coeffs(speaker), t - 1)
    assert not changed(paths.coeffs(speaker), t - 21) and changed(paths.coeffs(speaker), t - 20)
    assert changed(paths.coeffs(listener), t) and changed(paths.coeffs(listener), t - 1)
    assert not changed(paths.coeffs(listener), t + 8)
    pcm, rate = soundfile.read(paths.audio(speaker), dtype="float32")
    spf = rate // layout.FPS

    def audio_changed(first_sample: int, last_sample: int) -> bool:
        edited = pcm.copy()
        edited[first_sample:last_sample] = 0.5
        soundfile.write(paths.audio(speaker), edited, rate, subtype="FLOAT")
        window = ReactDataset(rapport_tree, SPLIT).window(0, t, w=8, context=20, prev=6)
        soundfile.write(paths.audio(speaker), pcm, rate, subtype="FLOAT")
        return not windows_equal(window, base)

    assert not audio_changed(t * spf, len(pcm))  # the whole future of the speaker's audio
    assert audio_changed((t - 1) * spf, t * spf)


def test_window_edges_iteration_and_torch_adapter(rapport_tree) -> None:
    ds = ReactDataset(rapport_tree, SPLIT)
    first = ds.window(2, 0)
    assert not first.context_valid.any() and not first.audio_valid.any()
    assert not first.prev_valid.any() and not first.speaker_face.any()
    last = ds.window(2, 48)
    np.testing.assert_array_equal(last.target_valid, np.arange(8) < 2)
    assert not last.target[2:].any()
    np.testing.assert_array_equal(last.target[:2], ds[2].listener.coeffs[48:])
    with pytest.raises(ValueError, match="outside the listener's 50 frames"):
        ds.window(0, 50)
    starts = list(ds.iter_windows(w=8))
    assert starts == [(i, t) for i in range(8) for t in range(0, FRAMES, 8)]
    assert list(ds.iter_windows(w=8, stride=25)) == [(i, t) for i in range(8) for t in (0, 25)]
    torch_ds = WindowDataset(ds, w=8, context=20, prev=6)
    assert len(torch_ds) == len(starts)
    item = torch_ds[9]
    win = ds.window(*starts[9], w=8, context=20, prev=6)
    assert item["speaker_audio"].shape == (20, 78) and item["target"].shape == (8, 58)
    assert all(v.dtype == torch.float32 for k, v in item.items() if k not in ("index", "t"))
    assert (int(item["index"]), int(item["t"])) == starts[9]
    np.testing.assert_array_equal(item["target"].numpy(), win.target)
    np.testing.assert_array_equal(item["context_valid"].numpy(), win.context_valid.astype(float))
    batch = next(iter(torch.utils.data.DataLoader(torch_ds, batch_size=4)))
    assert batch["speaker_face"].shape == (4, 20, 58) and batch["t"].tolist() == [0, 8, 16, 24]


def test_flat_npy_is_read_like_the_squeezed_form(release, react_release) -> None:
    assert np.load(release.paths.coeffs(FLAT_NPY)).ndim == 2
    assert np.load(release.paths.coeffs(PAIRS[0][0])).shape == (FRAMES, 1, 58)
    np.testing.assert_allclose(release.clip(FLAT_NPY).coeffs, expected_rapport(
        react_release.faceverse[FLAT_NPY], react_release.names), atol=1e-5)  # fmt: skip
