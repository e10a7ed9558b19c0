"""REACT-style 78-d audio features per video frame, offline and streaming with identical results.

Each 40 ms video frame ``k`` (``SAMPLES_PER_FRAME`` = 640 samples at 16 kHz) owns two Kaldi-style
analysis sub-frames of 400 samples (25 ms) starting at samples ``k*640`` and ``k*640 + 160``; this
is what Kaldi's ``snip_edges`` framing (shift 160) gives for one 640-sample chunk. Samples 560..639
of a frame feed no sub-frame. Over a clip the sub-frames form one sequence
``sub0(0), sub1(0), sub0(1), sub1(1), ...`` and the deltas run along that sequence.

Per sub-frame (Kaldi ``compute-mfcc-feats`` with ``--dither=0``): remove the DC offset; raw log
energy (before pre-emphasis and window, energy floored at float32 eps); pre-emphasis 0.97 (the first
sample uses itself); Povey window; 512-point FFT power spectrum; 23 triangular filters on the Kaldi
mel scale ``1127 ln(1 + f/700)`` from 20 Hz to Nyquist; log (floored at float32 eps); orthonormal
DCT-II keeping 13; cepstral lifter 22; ``c0`` replaced by the raw log energy. The signal is taken on
the float scale (int16 / 32768), so ``c0`` is Kaldi's value minus ``2 ln 32768``.

Deltas are regression deltas ``Δ_t = Σ_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 Σ n²)`` with
``N = delta_window``, indices clamped to the clip (edge replication at both ends); ``ΔΔ`` is the
same applied to ``Δ``. The 78 numbers of a video frame are six blocks of 13 (REACT: 13 coefficients
× 2 sub-frames × static/Δ/ΔΔ)::

    [static sub0, static sub1, Δ sub0, Δ sub1, ΔΔ sub0, ΔΔ sub1]

Look-ahead: ``ΔΔ`` at sub-frame ``t`` reads ``Δ`` up to ``t + N``, which reads statics up to
``t + 2N``. The last sub-frame of video frame ``k`` is ``t = 2k + 1``, so frame ``k`` is final once
sub-frame ``2k + 1 + 2N`` exists, i.e. once video frame ``k + ceil(2N / 2) = k + N`` is complete.
``MfccConfig.lookahead_frames`` computes this; :class:`StreamingMfcc` holds back that many frames.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import soxr

from models.face.layout import AUDIO_FEATURE_DIM, SAMPLE_RATE, SAMPLES_PER_FRAME

logger = logging.getLogger(__name__)

_EPS = float(np.finfo(np.float32).eps)
_BLOCK_FRAMES = 1024
"""Video frames analysed per batch (bounds the temporary window matrix on long signals)."""
MIN_RATE = 8_000
MAX_RATE = 192_000


@dataclass(frozen=True)
class MfccConfig:
    """Every parameter of the features; the defaults give the 78-d REACT layout."""

    frame_length: int = 400
    frame_shift: int = 160
    sub_frames: int = 2
    fft_size: int = 512
    preemph_coeff: float = 0.97
    num_mel_bins: int = 23
    low_freq: float = 20.0
    high_freq: float = SAMPLE_RATE / 2
    num_ceps: int = 13
    cepstral_lifter: float = 22.0
    delta_window: int = 1

    def __post_init__(self) -> None:
        last_end = (self.sub_frames - 1) * self.frame_shift + self.frame_length
        if self.sub_frames < 1 or self.frame_shift < 1 or last_end > SAMPLES_PER_FRAME:
            raise ValueError(
                f"{self.sub_frames} sub-frames of {self.frame_length} samples every "
                f"{self.frame_shift} do not fit in one {SAMPLES_PER_FRAME}-sample video frame"
            )
        if self.fft_size < self.frame_length:
            raise ValueError(f"fft_size {self.fft_size} < frame_length {self.frame_length}")
        if not 0.0 <= self.low_freq < self.high_freq <= SAMPLE_RATE / 2:
            raise ValueError(f"need 0 <= low_freq < high_freq <= {SAMPLE_RATE / 2}")
        if not 1 <= self.num_ceps <= self.num_mel_bins:
            raise ValueError(f"need 1 <= num_ceps ({self.num_ceps}) <= num_mel_bins")
        if self.delta_window < 1:
            raise ValueError(f"delta_window must be >= 1, got {self.delta_window}")

    @property
    def feature_dim(self) -> int:
        """Numbers per video frame: ceps × sub-frames × (static, Δ, ΔΔ); 78 by default."""
        return self.num_ceps * self.sub_frames * 3

    @property
    def history_subframes(self) -> int:
        """Static sub-frames needed before a sub-frame to compute its ΔΔ (``2 N``)."""
        return 2 * self.delta_window

    @property
    def lookahead_frames(self) -> int:
        """Video frames after frame ``k`` that must be complete before ``k`` is final.

        ``ceil(2 N / sub_frames)``: the last sub-frame of frame ``k`` needs statics ``2 N``
        sub-frames later. With the defaults (``N = 1``, 2 sub-frames) this is 1 frame (40 ms).
        """
        return -(-2 * self.delta_window // self.sub_frames)


class _Tables(NamedTuple):
    window: np.ndarray  # (frame_length,)
    fbank_t: np.ndarray  # (fft_size // 2 + 1, num_mel_bins)
    dct_t: np.ndarray  # (num_mel_bins, num_ceps)
    lifter: np.ndarray  # (num_ceps,)


def _mel(freq: np.ndarray | float) -> np.ndarray:
    """Kaldi's mel scale."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def mel_filterbank(config: MfccConfig = MfccConfig()) -> np.ndarray:
    """Kaldi's triangular mel filters, shape ``(num_mel_bins, fft_size // 2 + 1)``.

    Triangles are linear in mel, equally spaced between ``low_freq`` and ``high_freq``; an FFT bin
    gets weight only strictly inside a triangle, so the Nyquist bin (at ``high_freq``) gets none.
    """
    n_bins = config.fft_size // 2 + 1
    bin_mels = _mel(np.arange(n_bins) * (SAMPLE_RATE / config.fft_size))
    mel_low, mel_high = float(_mel(config.low_freq)), float(_mel(config.high_freq))
    step = (mel_high - mel_low) / (config.num_mel_bins + 1)
    edges = mel_low + step * np.arange(config.num_mel_bins + 2)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_mels - left) / (center - left)
    falling = (right - bin_mels) / (right - center)
    weights = np.where(bin_mels <= center, rising, falling)
    inside = (bin_mels > left) & (bin_mels < right)
    return np.where(inside, weights, 0.0)


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The first ``n_out`` rows of the orthonormal DCT-II of size ``n_in``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    dct = np.sqrt(2.0 / n_in) * np.cos(np.pi / n_in * (n + 0.5) * k)
    dct[0] = np.sqrt(1.0 / n_in)
    return dct


@functools.lru_cache(maxsize=8)
def _tables(config: MfccConfig) -> _Tables:
    n = np.arange(config.frame_length)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (config.frame_length - 1))
    q = config.cepstral_lifter
    i = np.arange(config.num_ceps)
    lifter = 1.0 + 0.5 * q * np.sin(np.pi * i / q) if q != 0 else np.ones(config.num_ceps)
    return _Tables(
        window=hann**0.85,  # Povey window
        fbank_t=np.ascontiguousarray(mel_filterbank(config).T),
        dct_t=np.ascontiguousarray(_dct_matrix(config.num_mel_bins, config.num_ceps).T),
        lifter=lifter,
    )


def _as_pcm(pcm: np.ndarray, dtype: type[np.floating] = np.float64) -> np.ndarray:
    """Validated 1-D mono PCM as ``dtype``: int16 is scaled by 1/32768, floats are kept as is."""
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise ValueError(f"pcm must be 1-D mono, got shape {arr.shape} (use to_mono first)")
    if arr.dtype == np.int16:
        return arr.astype(dtype) / dtype(32768.0)
    if arr.dtype not in (np.float32, np.float64):
        raise ValueError(f"pcm must be int16, float32 or float64, got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("pcm contains NaN or infinite samples")
    return arr.astype(dtype, copy=False)


def _cepstra_of_windows(windows: np.ndarray, config: MfccConfig) -> np.ndarray:
    """Static MFCCs (``c0`` = raw log energy) of raw sub-frames, shape ``(n, num_ceps)``."""
    tables = _tables(config)
    x = windows - windows.mean(axis=1, keepdims=True)
    log_energy = np.log(np.maximum(np.einsum("ij,ij->i", x, x), _EPS))
    emph = np.empty_like(x)
    emph[:, 1:] = x[:, 1:] - config.preemph_coeff * x[:, :-1]
    emph[:, 0] = x[:, 0] * (1.0 - config.preemph_coeff)
    spectrum = np.fft.rfft(emph * tables.window, n=config.fft_size, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    log_mel = np.log(np.maximum(power @ tables.fbank_t, _EPS))
    ceps = (log_mel @ tables.dct_t) * tables.lifter
    ceps[:, 0] = log_energy
    return ceps


def _static_cepstra(pcm: np.ndarray, n_frames: int, config: MfccConfig) -> np.ndarray:
    """Static MFCCs of the sub-frames of the first ``n_frames`` video frames of ``pcm``.

    Shape ``(n_frames * sub_frames, num_ceps)``, in clip order (sub0, sub1 of frame 0, ...).
    """
    offsets = np.arange(config.sub_frames) * config.frame_shift
    out = np.empty((n_frames * config.sub_frames, config.num_ceps))
    views = np.lib.stride_tricks.sliding_window_view(pcm, config.frame_length)
    for first in range(0, n_frames, _BLOCK_FRAMES):
        last = min(first + _BLOCK_FRAMES, n_frames)
        starts = (np.arange(first, last)[:, None] * SAMPLES_PER_FRAME + offsets).ravel()
        rows = slice(first * config.sub_frames, last * config.sub_frames)
        out[rows] = _cepstra_of_windows(views[starts], config)
    return out


def _deltas(seq: np.ndarray, n_win: int) -> np.ndarray:
    """Regression deltas along axis 0 with edge replication at both ends of ``seq``."""
    length = len(seq)
    padded = np.pad(seq, ((n_win, n_win), (0, 0)), mode="edge")
    acc = np.zeros_like(seq)
    for n in range(1, n_win + 1):
        acc += n * (padded[n_win + n : n_win + n + length] - padded[n_win - n : n_win - n + length])
    return acc / (n_win * (n_win + 1) * (2 * n_win + 1) / 3.0)  # 2 Σ n²


def _assemble(static: np.ndarray, start: int, stop: int, config: MfccConfig) -> np.ndarray:
    """Feature frames from the sub-frame rows ``start:stop`` of a run of consecutive statics.

    Both ends of ``static`` are treated as clip edges, so rows within ``history_subframes`` of an
    end that is not a real clip edge are wrong: the caller must not ask for them.
    """
    delta = _deltas(static, config.delta_window)
    delta2 = _deltas(delta, config.delta_window)
    n_frames = (stop - start) // config.sub_frames
    blocks = [b[start:stop].reshape(n_frames, -1) for b in (static, delta, delta2)]
    return np.concatenate(blocks, axis=1).astype(np.float32)


def mfcc_features(pcm: np.ndarray, config: MfccConfig = MfccConfig()) -> np.ndarray:
    """The feature frames of a whole 16 kHz mono clip, shape ``(len(pcm) // 640, feature_dim)``.

    ``pcm`` is float32/float64 in [-1, 1] or int16 (scaled by 1/32768); a trailing partial video
    frame is dropped. Raises ``ValueError`` for non-1-D, non-finite or other-dtype input.
    """
    signal = _as_pcm(pcm)
    n_frames = len(signal) // SAMPLES_PER_FRAME
    if n_frames == 0:
        return np.zeros((0, config.feature_dim), dtype=np.float32)
    static = _static_cepstra(signal, n_frames, config)
    return _assemble(static, 0, len(static), config)


class StreamingMfcc:
    """Incremental :func:`mfcc_features`: concatenated outputs equal the offline result.

    ``push`` returns the frames that became final, ``lookahead_frames`` behind the input; ``flush``
    ends the clip (edge replication as offline) and returns the rest, after which the next ``push``
    starts a new clip. State is bounded: between calls it holds under one video frame of samples
    and at most ``history_subframes + sub_frames * lookahead_frames`` rows of static cepstra.
    """

    def __init__(self, config: MfccConfig = MfccConfig()) -> None:
        self._config = config
        self._frames_emitted = 0
        self._new_clip()

    def _new_clip(self) -> None:
        self._pending = np.zeros(0, dtype=np.float64)
        self._static = np.zeros((0, self._config.num_ceps))
        self._base = 0  # clip sub-frame index of self._static[0]
        self._frames_done = 0  # complete video frames seen in this clip
        self._clip_emitted = 0  # video frames emitted in this clip

    @property
    def config(self) -> MfccConfig:
        """The feature parameters."""
        return self._config

    @property
    def frames_emitted(self) -> int:
        """Feature frames returned by ``push``/``flush`` since construction or ``reset``."""
        return self._frames_emitted

    @property
    def buffered_samples(self) -> int:
        """Input samples held for the next (incomplete) video frame; always < 640."""
        return len(self._pending)

    @property
    def buffered_subframes(self) -> int:
        """Rows of static cepstra held for deltas and look-ahead."""
        return len(self._static)

    def reset(self) -> None:
        """Drop all state and start a new clip with the counter at zero."""
        self._frames_emitted = 0
        self._new_clip()

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add 16 kHz mono samples (any count); returns the newly final frames ``(n, dim)``."""
        signal = _as_pcm(samples)
        if len(self._pending):
            signal = np.concatenate((self._pending, signal))
        n_new = len(signal) // SAMPLES_PER_FRAME
        if n_new:
            fresh = _static_cepstra(signal, n_new, self._config)
            self._static = np.concatenate((self._static, fresh))
            self._frames_done += n_new
            signal = signal[n_new * SAMPLES_PER_FRAME :]
        self._pending = signal.copy()
        return self._emit(self._frames_done - self._config.lookahead_frames)

    def flush(self) -> np.ndarray:
        """End the clip: returns the held-back frames; a trailing partial frame is dropped."""
        out = self._emit(self._frames_done)
        if len(self._pending):
            logger.debug("dropping %d samples of a partial final frame", len(self._pending))
        self._new_clip()
        return out

    def _emit(self, stop_frame: int) -> np.ndarray:
        """Frames ``clip_emitted:stop_frame`` of this clip; trims the statics no longer needed."""
        cfg = self._config
        start_frame = self._clip_emitted
        if stop_frame <= start_frame:
            return np.zeros((0, cfg.feature_dim), dtype=np.float32)
        start = start_frame * cfg.sub_frames - self._base
        stop = stop_frame * cfg.sub_frames - self._base
        out = _assemble(self._static, start, stop, cfg)
        keep_from = max(self._base, stop_frame * cfg.sub_frames - cfg.history_subframes)
        self._static = self._static[keep_from - self._base :].copy()
        self._base = keep_from
        self._clip_emitted = stop_frame
        self._frames_emitted += stop_frame - start_frame
        return out


def _check_rate(sample_rate: float) -> int:
    """The rate as an int if it is a whole number of Hz within ``MIN_RATE..MAX_RATE``."""
    rate = float(sample_rate)
    if not (MIN_RATE <= rate <= MAX_RATE) or rate != int(rate):
        raise ValueError(f"sample rate {sample_rate} outside {MIN_RATE}..{MAX_RATE} Hz")
    return int(rate)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Float32 mono: ``(n, channels)`` arrays are averaged over channels; int16 is scaled."""
    arr = np.asarray(x)
    if arr.ndim == 2:
        scale = 1.0 / 32768.0 if arr.dtype == np.int16 else 1.0
        return (arr.astype(np.float64).mean(axis=1) * scale).astype(np.float32)
    return _as_pcm(arr, np.float32)


def resample_to_16k(pcm: np.ndarray, sample_rate: float) -> np.ndarray:
    """A whole mono signal resampled to 16 kHz (soxr 'HQ'), float32."""
    rate = _check_rate(sample_rate)
    signal = _as_pcm(pcm, np.float32)
    if rate == SAMPLE_RATE:
        return signal.copy()
    return soxr.resample(signal, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


class StreamingResampler:
    """Chunked mono resampling to 16 kHz around ``soxr.ResampleStream`` (float32, 'HQ')."""

    def __init__(self, in_rate: float) -> None:
        self._in_rate = _check_rate(in_rate)
        self._stream: soxr.ResampleStream | None = None
        if self._in_rate != SAMPLE_RATE:
            self._stream = soxr.ResampleStream(
                self._in_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
            )

    @property
    def in_rate(self) -> int:
        """The input sample rate in Hz."""
        return self._in_rate

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Resample the next chunk; returns the 16 kHz samples available so far (float32)."""
        signal = _as_pcm(chunk, np.float32)
        if self._stream is None:
            return signal.copy()
        return self._stream.resample_chunk(signal, last=False)

    def flush(self) -> np.ndarray:
        """Return the samples still inside the filter and get ready for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return out


if MfccConfig().feature_dim != AUDIO_FEATURE_DIM:  # pragma: no cover - layout guard
    raise ImportError(f"default MFCC layout is not {AUDIO_FEATURE_DIM}-d")
