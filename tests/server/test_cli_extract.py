"""``rapport extract`` end to end: real clips, real speech, and the bad inputs a user will try."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.face import layout
from models.features.mfcc import mfcc_features, resample_to_16k
from server.cli import main
from server.perception.audio import AudioFeatureStream, load_audio
from server.perception.video import iter_frames_25fps
from tests.conftest import write_video


@pytest.fixture(scope="module")
def clip_4s(cap12: Path, tmp_path_factory) -> Path:
    frames = [rgb for _, rgb in itertools.islice(iter_frames_25fps(cap12), 100)]
    return write_video(tmp_path_factory.mktemp("cli") / "cap12_4s.mp4", frames)


def test_extract_with_separate_speech_file(clip_4s, speech_wav, tmp_path) -> None:
    out = tmp_path / "out.npz"
    assert main(["-q", "extract", str(clip_4s), "--audio", str(speech_wav), "--out", str(out)]) == 0
    d = np.load(out)
    assert d["coeffs"].shape == (100, 58) and d["found"].all()
    assert list(d["names"]) == list(layout.NAMES) and int(d["fps"]) == 25
    window = json.loads(str(d["pfl_window"]))
    assert window["size"] > 0 and window["ref_scale"] > 0
    assert bool(d["has_audio"])
    pcm = load_audio(speech_wav)
    n_audio = len(pcm) // layout.SAMPLES_PER_FRAME
    expected = mfcc_features(pcm)
    n = min(100, n_audio)
    np.testing.assert_array_equal(d["audio_mask"], np.arange(100) < n)
    np.testing.assert_allclose(d["audio_features"][:n], expected[:n], atol=1e-5)
    assert not d["audio_features"][n:].any()


def test_extract_uses_the_videos_own_audio_track(astronaut, speech_wav, tmp_path) -> None:
    pcm = load_audio(speech_wav)[: 2 * layout.SAMPLE_RATE]
    frames = [np.ascontiguousarray(astronaut[:384, 64:448])] * 50
    clip = write_video(tmp_path / "talk.mp4", frames, audio=pcm)
    out = tmp_path / "talk.npz"
    assert main(["-q", "extract", str(clip), "--out", str(out)]) == 0
    d = np.load(out)
    assert bool(d["has_audio"]) and d["audio_mask"][:45].all()
    feats = d["audio_features"][d["audio_mask"]]
    # AAC is lossy: compare the energy track (c0 of sub-frame 0) with the original's.
    ref = mfcc_features(pcm)[: len(feats)]
    assert np.corrcoef(feats[:, 0], ref[:, 0])[0, 1] > 0.95


def test_extract_without_audio_reports_it(clip_4s, tmp_path, caplog) -> None:
    out = tmp_path / "silent.npz"
    assert main(["extract", str(clip_4s), "--out", str(out)]) == 0
    d = np.load(out)
    assert not bool(d["has_audio"]) and d["audio_features"].shape == (100, 0)
    assert not d["audio_mask"].any()
    assert "no audio track" in caplog.text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x00\x01garbage" * 100), "cannot"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "cannot"),
    ],
    ids=["garbage", "missing", "empty"],
)
def test_extract_rejects_unreadable_files(tmp_path, caplog, make, message) -> None:
    bad = tmp_path / "bad.mp4"
    make(bad)
    assert main(["-q", "extract", str(bad), "--out", str(tmp_path / "o.npz")]) == 2
    assert message in caplog.text and not (tmp_path / "o.npz").exists()


def test_truncated_video_keeps_the_frames_before_the_damage(clip_4s, tmp_path) -> None:
    data = clip_4s.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "cut.npz"
    code = main(["-q", "extract", str(cut), "--out", str(out)])
    if code == 0:  # the container was still readable: fewer frames, each real
        d = np.load(out)
        assert 0 < len(d["coeffs"]) <= 100 and d["found"].any()
    else:
        assert code == 2


def test_audio_option_must_have_audio(clip_4s, tmp_path, caplog) -> None:
    out = tmp_path / "o.npz"
    assert main(["-q", "extract", str(clip_4s), "--audio", str(clip_4s), "--out", str(out)]) == 2
    assert "no audio stream" in caplog.text


def test_console_script_reports_no_face_clearly(tmp_path) -> None:
    rng = np.random.default_rng(1)
    clip = write_video(
        tmp_path / "noise.mp4",
        [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(8)],
    )
    script = Path(sys.executable).parent / "rapport"
    argv = [str(script), "-q", "extract", str(clip), "--out", str(tmp_path / "o.npz")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "no face found in any of its 8 frames" in run.stderr
    assert "Traceback" not in run.stderr


def test_audio_stream_at_44k_matches_the_whole_signal(speech_wav) -> None:
    pcm16k = load_audio(speech_wav)
    x44 = resample_to_16k(pcm16k, 16_000)  # identity, float32
    x44 = np.interp(np.arange(0, len(x44), 16_000 / 44_100), np.arange(len(x44)), x44)
    ints = np.clip(x44 * 32767, -32768, 32767).astype(np.int16)
    stream = AudioFeatureStream(44_100)
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(ints):
        n = int(rng.integers(1, 3000))
        parts.append(stream.push(ints[i : i + n]))
        i += n
    parts.append(stream.flush())
    starts = [p.start for p in parts]
    feats = np.concatenate([p.features for p in parts])
    assert starts == sorted(starts) and parts[-1].start + len(parts[-1].features) == len(feats)
    expected = mfcc_features(resample_to_16k(ints.astype(np.float32) / 32768, 44_100))
    assert len(feats) == len(expected)
    np.testing.assert_allclose(feats, expected, atol=1e-4)
