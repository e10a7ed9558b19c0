"""The 78-d REACT audio features: layout, Kaldi arithmetic, streaming == offline, resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import soundfile as sf
import soxr

from models.face.layout import AUDIO_FEATURE_DIM, SAMPLE_RATE, SAMPLES_PER_FRAME
from models.features.mfcc import (
    MfccConfig,
    StreamingMfcc,
    StreamingResampler,
    mel_filterbank,
    mfcc_features,
    resample_to_16k,
    to_mono,
)

SOUNDS_DIR = Path(__file__).resolve().parents[2] / ".cache" / "media" / "speech"
PREFERRED = ("agent-alreadyon.wav", "agent-incorrect.wav", "activated.wav")
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def speech_files() -> list[Path]:
    """A few real telephony speech recordings (Debian asterisk-core-sounds-en-wav)."""
    if not SOUNDS_DIR.is_dir():
        pytest.skip(f"{SOUNDS_DIR} missing: `make media` copies them from Debian asterisk sounds")
    files = [SOUNDS_DIR / name for name in PREFERRED if (SOUNDS_DIR / name).is_file()]
    files = files or sorted(SOUNDS_DIR.glob("*.wav"))[:3]
    if not files:
        pytest.skip(f"no .wav files in {SOUNDS_DIR}")
    return files


@pytest.fixture(scope="module")
def speech_native(speech_files: list[Path]) -> tuple[np.ndarray, int]:
    """The first recording at its own sample rate (float32 mono)."""
    data, rate = sf.read(speech_files[0], dtype="float32", always_2d=True)
    return to_mono(data), rate


@pytest.fixture(scope="module")
def speech(speech_files: list[Path]) -> np.ndarray:
    """The recordings concatenated at 16 kHz (a few seconds of speech)."""
    parts = []
    for path in speech_files:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        parts.append(resample_to_16k(to_mono(data), rate))
    return np.concatenate(parts)


def _stream(
    pcm: np.ndarray, sizes: list[int] | int, config: MfccConfig | None = None
) -> tuple[np.ndarray, StreamingMfcc]:
    """Push ``pcm`` through a StreamingMfcc in chunks of ``sizes`` (cycled); returns all frames."""
    config = config or MfccConfig()
    stream = StreamingMfcc(config)
    sizes = [sizes] if isinstance(sizes, int) else sizes
    outs, pos, i = [], 0, 0
    while pos < len(pcm):
        step = sizes[i % len(sizes)]
        outs.append(stream.push(pcm[pos : pos + step]))
        pos, i = pos + step, i + 1
    outs.append(stream.flush())
    assert all(o.shape[1] == config.feature_dim and o.dtype == np.float32 for o in outs)
    return np.concatenate(outs), stream


# ----------------------------------------------------------------------------- shape, validation


def test_shape_finite_and_varying_on_speech(speech: np.ndarray) -> None:
    feats = mfcc_features(speech)
    assert feats.shape == (len(speech) // SAMPLES_PER_FRAME, AUDIO_FEATURE_DIM)
    assert feats.dtype == np.float32
    assert np.all(np.isfinite(feats))
    assert np.all(feats.var(axis=0) > 0)
    assert MfccConfig().feature_dim == AUDIO_FEATURE_DIM == 78


@pytest.mark.parametrize("n", [0, 1, 639, 640, 1279, 1280, 6400 + 17])
def test_frame_count_drops_partial_frame(n: int) -> None:
    pcm = np.random.default_rng(n).uniform(-0.5, 0.5, n)
    assert mfcc_features(pcm).shape == (n // 640, 78)
    out, stream = _stream(pcm, 100)
    assert out.shape == (n // 640, 78) and stream.frames_emitted == n // 640


@pytest.mark.parametrize(
    ("pcm", "message"),
    [
        (np.zeros((640, 2), dtype=np.float32), "1-D"),
        (np.array([0.0, np.nan] * 640), "NaN"),
        (np.array([0.0, np.inf] * 640, dtype=np.float32), "infinite"),
        (np.zeros(1280, dtype=np.int32), "int32"),
    ],
)
def test_bad_input_raises(pcm: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mfcc_features(pcm)
    with pytest.raises(ValueError, match=message):
        StreamingMfcc().push(pcm)


def test_int16_equals_float_over_32768(speech: np.ndarray) -> None:
    pcm16 = np.round(np.clip(speech[:16000], -1, 1) * 32767).astype(np.int16)
    as_float = pcm16.astype(np.float64) / 32768.0
    np.testing.assert_array_equal(mfcc_features(pcm16), mfcc_features(as_float))
    np.testing.assert_allclose(
        mfcc_features(as_float.astype(np.float32)), mfcc_features(pcm16), atol=1e-4
    )
    np.testing.assert_array_equal(resample_to_16k(pcm16, 8000), resample_to_16k(as_float, 8000))
    np.testing.assert_array_equal(StreamingMfcc().push(pcm16), StreamingMfcc().push(as_float))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        MfccConfig(frame_length=600)  # second sub-frame would run past 640 samples
    with pytest.raises(ValueError):
        MfccConfig(delta_window=0)
    with pytest.raises(ValueError):
        MfccConfig(num_ceps=30)


# ----------------------------------------------------------------------------- energy, silence


def test_silence_is_finite_and_energy_tracks_speech(speech: np.ndarray) -> None:
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    quiet = mfcc_features(silence)
    assert np.all(np.isfinite(quiet))
    np.testing.assert_allclose(quiet[:, [0, 13]], np.log(EPS32), rtol=1e-6)  # floored energy
    np.testing.assert_allclose(quiet[:, 26:], 0.0, atol=1e-6)  # nothing changes: zero deltas

    feats = mfcc_features(np.concatenate([silence, speech, silence]))
    c0 = feats[:, [0, 13]]
    n_sil = SAMPLE_RATE // SAMPLES_PER_FRAME
    speech_c0, silence_c0 = c0[n_sil + 1 : -n_sil - 1], np.concatenate([c0[:n_sil], c0[-n_sil:]])
    assert np.median(speech_c0) > silence_c0.max() + 5.0
    assert speech_c0.max() > np.median(speech_c0) + 1.0  # loud syllables stand out


def test_sine_energy_and_mel_peak() -> None:
    """A 1 kHz sine: exact raw energy in c0 and the filter containing 1 kHz responds most."""
    amp, freq = 0.5, 1000.0
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    feats = mfcc_features(amp * np.sin(2 * np.pi * freq * t))
    # 400 samples = 25 whole periods: zero mean, energy 400 * amp² / 2
    np.testing.assert_allclose(feats[:, 0], np.log(400 * amp**2 / 2), atol=1e-4)

    cfg = MfccConfig()
    fbank = mel_filterbank(cfg)
    assert fbank.shape == (23, 257) and np.all(fbank >= 0) and np.all(fbank <= 1)
    assert fbank[:, -1].sum() == 0  # Nyquist bin lies on the last edge: no weight
    frame = amp * np.sin(2 * np.pi * freq * t[:400]) * np.hanning(400) ** 0.85
    power = np.abs(np.fft.rfft(frame, 512)) ** 2
    best = int(np.argmax(fbank @ power))
    hz = np.arange(257) * SAMPLE_RATE / 512
    support = hz[fbank[best] > 0]
    assert support.min() < freq < support.max()
    mel_edges = np.linspace(_kaldi_mel(20.0), _kaldi_mel(8000.0), 25)
    assert abs(mel_edges[best + 1] - _kaldi_mel(freq)) < (mel_edges[1] - mel_edges[0])


# ------------------------------------------------------------------------ independent reference


def _kaldi_mel(f: float | np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)


def _reference_static(window: np.ndarray) -> np.ndarray:
    """Kaldi MFCC of one 400-sample window, written plainly (np.interp triangles, scipy DCT)."""
    x = window.astype(np.float64) - window.mean()
    log_energy = np.log(max(float(np.dot(x, x)), EPS32))
    emph = np.concatenate(([x[0] - 0.97 * x[0]], x[1:] - 0.97 * x[:-1]))
    spec = np.fft.fft(np.concatenate((emph * np.hanning(400) ** 0.85, np.zeros(112))))
    power = np.abs(spec[:257]) ** 2
    bin_mel = _kaldi_mel(np.arange(257) * 16000.0 / 512)
    edges = np.linspace(_kaldi_mel(20.0), _kaldi_mel(8000.0), 25)
    energies = np.empty(23)
    for m in range(23):
        tri = np.interp(bin_mel, edges[m : m + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
        energies[m] = np.dot(tri, power)
    ceps = scipy.fft.dct(np.log(np.maximum(energies, EPS32)), type=2, norm="ortho")[:13]
    ceps *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    ceps[0] = log_energy
    return ceps


def _reference_deltas(seq: np.ndarray, n_win: int) -> np.ndarray:
    out = np.zeros_like(seq)
    last = len(seq) - 1
    for t in range(len(seq)):
        for n in range(1, n_win + 1):
            out[t] += n * (seq[min(t + n, last)] - seq[max(t - n, 0)])
    return out / (2 * sum(n * n for n in range(1, n_win + 1)))


@pytest.mark.parametrize("delta_window", [1, 2])
def test_matches_plain_reference(speech: np.ndarray, delta_window: int) -> None:
    pcm = speech[: 30 * 640 + 100]
    subs = [pcm[k * 640 + off : k * 640 + off + 400] for k in range(30) for off in (0, 160)]
    static = np.array([_reference_static(w) for w in subs])
    delta = _reference_deltas(static, delta_window)
    delta2 = _reference_deltas(delta, delta_window)
    expected = np.concatenate([b.reshape(30, 26) for b in (static, delta, delta2)], axis=1)
    got = mfcc_features(pcm, MfccConfig(delta_window=delta_window))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    # layout: block 1 is the second sub-frame, 160 samples after the first
    np.testing.assert_allclose(got[3, 13:26], _reference_static(pcm[3 * 640 + 160 :][:400]), 1e-4)


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("sizes", [333, 640, 641, 160, 7, [1, 2, 639, 1281, 5000], 160_000])
def test_streaming_equals_offline(speech: np.ndarray, sizes: list[int] | int) -> None:
    offline = mfcc_features(speech)
    online, stream = _stream(speech, sizes)
    assert online.shape == offline.shape and stream.frames_emitted == len(offline)
    np.testing.assert_allclose(online, offline, atol=1e-4, rtol=0)


def test_streaming_random_chunks_and_wider_deltas(speech: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    for delta_window in (1, 2, 3):
        cfg = MfccConfig(delta_window=delta_window)
        sizes = [int(s) for s in rng.integers(1, 4000, size=50)]
        online, _ = _stream(speech, sizes, cfg)
        np.testing.assert_allclose(online, mfcc_features(speech, cfg), atol=1e-4, rtol=0)


def test_streaming_one_sample_pushes(speech: np.ndarray) -> None:
    clip = speech[: 8000 + 123]
    online, _ = _stream(clip, 1)
    np.testing.assert_allclose(online, mfcc_features(clip), atol=1e-4, rtol=0)


def test_stream_restarts_after_flush_and_reset(speech: np.ndarray) -> None:
    a, b = speech[:9000], speech[9000:20000]
    stream = StreamingMfcc()
    first = np.concatenate([stream.push(a), stream.flush()])
    second = np.concatenate([stream.push(b), stream.flush()])
    np.testing.assert_allclose(first, mfcc_features(a), atol=1e-4)
    np.testing.assert_allclose(second, mfcc_features(b), atol=1e-4)
    assert stream.frames_emitted == len(first) + len(second)
    stream.push(a)
    stream.reset()
    assert stream.frames_emitted == 0 and stream.buffered_samples == 0
    assert stream.buffered_subframes == 0


@pytest.mark.parametrize("delta_window", [1, 2, 3])
def test_lookahead_is_exact(speech: np.ndarray, delta_window: int) -> None:
    """Frame k depends on frame k + lookahead's samples but not on later ones; push holds it."""
    cfg = MfccConfig(delta_window=delta_window)
    look = cfg.lookahead_frames
    assert look == -(-2 * delta_window // 2) == delta_window
    k, pcm = 10, speech[: 40 * 640].astype(np.float64)
    base = mfcc_features(pcm, cfg)[k]
    for frame, changes in ((k + look, True), (k + look + 1, False)):
        bumped = pcm.copy()
        bumped[frame * 640 + 160 : frame * 640 + 560] += 0.3  # sub1 of that frame only
        changed = not np.allclose(mfcc_features(bumped, cfg)[k], base, atol=1e-6)
        assert changed == changes, (frame, changes)
    stream = StreamingMfcc(cfg)
    got = stream.push(pcm[: (k + look + 1) * 640 - 1])
    assert len(got) == k  # frames 0..k-1: frame k waits for the last sample of frame k + look
    got = np.concatenate([got, stream.push(pcm[(k + look + 1) * 640 - 1 : (k + look + 1) * 640])])
    assert len(got) == k + 1 and stream.frames_emitted == k + 1
    np.testing.assert_allclose(got[k], base, atol=1e-4)


def test_state_stays_bounded_over_a_minute(speech: np.ndarray) -> None:
    cfg = MfccConfig()
    reps = int(np.ceil(60 * SAMPLE_RATE / len(speech)))
    minute = np.tile(speech, reps)[: 60 * SAMPLE_RATE]
    limit = cfg.history_subframes + cfg.sub_frames * cfg.lookahead_frames
    stream = StreamingMfcc(cfg)
    rng = np.random.default_rng(3)
    pos, total = 0, 0
    while pos < len(minute):
        step = int(rng.integers(1, 20_000))
        total += len(stream.push(minute[pos : pos + step]))
        pos += step
        assert stream.buffered_samples < SAMPLES_PER_FRAME
        assert stream.buffered_subframes <= limit == 4
        assert total == max(0, min(pos, len(minute)) // 640 - cfg.lookahead_frames)
    total += len(stream.flush())
    assert total == stream.frames_emitted == 60 * 25


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [8000, 44100])
def test_streaming_resampler_matches_whole(
    speech_native: tuple[np.ndarray, int], rate: int
) -> None:
    native, native_rate = speech_native
    signal = native if rate == native_rate else soxr.resample(native, native_rate, rate, "HQ")
    whole = resample_to_16k(signal, rate)
    assert abs(len(whole) - round(len(signal) * SAMPLE_RATE / rate)) <= 1
    sizes = np.random.default_rng(rate).integers(1, 3000, size=len(signal) // 100)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    resampler = StreamingResampler(rate)
    parts = [resampler.push(signal[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    streamed = np.concatenate([*parts, resampler.flush()])
    assert streamed.dtype == np.float32
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    np.testing.assert_allclose(streamed[100 : n - 100], whole[100 : n - 100], atol=1e-5)
    again = np.concatenate([resampler.push(signal), resampler.flush()])  # reusable after flush
    np.testing.assert_allclose(again[100 : n - 100], whole[100 : n - 100], atol=1e-5)


def test_resampler_identity_and_bad_rates(speech: np.ndarray) -> None:
    chunk = speech[:1000]
    passthrough = StreamingResampler(SAMPLE_RATE)
    np.testing.assert_array_equal(passthrough.push(chunk), chunk)
    assert passthrough.flush().size == 0
    np.testing.assert_array_equal(resample_to_16k(chunk, 16000), chunk)
    for bad in (0, 7999, 192_001, 44_100.5, -16000):
        with pytest.raises(ValueError, match="sample rate"):
            resample_to_16k(chunk, bad)
        with pytest.raises(ValueError, match="sample rate"):
            StreamingResampler(bad)
    assert StreamingResampler(8000).in_rate == 8000 and StreamingResampler(192_000)


def test_to_mono() -> None:
    stereo = np.stack([np.full(10, 0.5), np.full(10, -0.25)], axis=1)
    np.testing.assert_allclose(to_mono(stereo), 0.125)
    assert to_mono(stereo).dtype == np.float32
    ints = np.full((4, 2), 16384, dtype=np.int16)
    np.testing.assert_allclose(to_mono(ints), 0.5)
    np.testing.assert_array_equal(to_mono(np.ones(5)), np.ones(5, dtype=np.float32))
