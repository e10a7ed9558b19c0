"""Online, window-by-window generation for many sessions at once (pure: no server, no I/O).

A :class:`Session` holds one listener's live state: bounded ring buffers of the speaker's last
``C`` frames (78-d audio features, 58-d face, validity), the listener's last ``P`` generated
frames, its PosNet history, its own ``torch.Generator`` and its low-rank shifts (``None`` for the
generic listener). :class:`OnlineRunner` generates the next window ``[t, t + W)`` of every ready
session in ONE batched forward — mixing listeners through their shifts — from the speaker's past
only (frames ``< t``), then smooths the pose with PosNet and advances each session.

A discontinuity (a PFL re-anchor or a gap without a face on the speaker's side) marks the
speaker's face frames before it invalid, so the context never mixes two coordinate frames; the
listener's own previous frames and PosNet history are kept, so its output continues smoothly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from models.data.windows import AUDIO_LOOKAHEAD
from models.face import layout
from models.generator.denoiser import Denoiser, sample_windows
from models.generator.lowrank import LowRank, Shifts
from models.posnet.model import PosNet
from models.posnet.runner import smooth_step

LEVEL_SECONDS = 10.0
"""Time constant of the level anchoring without feedback: an enrolled listener's windows are
shifted by ``rest − level``, ``level`` an exponential average of the generated frames over about
this long (5, 10 and 20 s were tried on the val split; 10 s gave the best own-listener FRCorr).
Also tried on val (112 samples, K = 5, own-listener FRCorr / FRDist; generic 0.297 / 43.0): this
EMA 0.321 / 39.7, a cumulative mean 0.316 / 39.1, a constant offset from the train persons' mean
resting face 0.295 / 41.7 (half of it 0.312 / 40.0)."""

EXPRESSIVITY_POWER = 0.75
"""Without feedback an enrolled listener's expression is also scaled about the level, by
``gain = (spread / population spread) ** EXPRESSIVITY_POWER`` clipped to
:data:`EXPRESSIVITY_RANGE` (spread: ``models.personal.enrolment.expression_spread`` of the
enrolment clip; population: ``GeneratorConfig.expression_spread``, ``rapport train spread``): a
person who moves more than the training population reacts with larger amplitudes (the world's
listeners differ 3× in expressivity). On the val split (112 samples, K = 5, own-listener FRCorr
/ FRDist; generic 0.297 / 43.0; level anchoring and shifts without a gain 0.321 / 39.7): power
0.75 0.321 / 38.4, 1.0 0.319 / 38.3, 1.5 0.315 / 38.5 (gains 0.5 to 1.47, median 1.01, at 0.75).
One gain for all 52 blendshapes beat one gain per blendshape in an earlier probe (10 s of a
person give a noisy spread per coefficient: FRDist 42.5 against 40.1 at power 1)."""
EXPRESSIVITY_RANGE = (0.5, 2.0)
"""Bounds of the expressivity gain (:data:`EXPRESSIVITY_POWER`)."""


EASE_FRAMES = 4
"""Expression seam easing: the step between the last frame sent and a new window's first frame
is faded out linearly over this many frames (the expression dims only; PosNet joins the pose).
On the val split (no feedback, 2 steps, guidance 2) it cut the expression velocity at seams from
3.1 to 0.56 times the velocity inside windows, and FRCorr/FRDist moved from 0.377/41.6 to
0.394/40.5 (2 frames: 0.91 and 0.388/40.8; 3: 0.69 and 0.391/40.6)."""


def _push(buf: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Append rows to a fixed-length ring buffer (oldest rows dropped)."""
    n = len(buf)
    return np.concatenate([buf, new])[-n:] if len(new) < n else new[-n:].copy()


@dataclass(eq=False)
class Session:
    """One listener's live generation state; bounded whatever the stream length."""

    context: int
    prev: int
    window: int
    seed: int
    shifts: dict[str, tuple[Tensor, Tensor]] | None = None
    """Low-rank factors per layer without a batch axis: ``{name: (a (out, r), b (r, in))}``."""
    received: int = 0
    """Speaker frames received so far."""
    t: int = 0
    """Start frame of the next window to generate."""
    audio: np.ndarray = field(init=False)
    audio_ok: np.ndarray = field(init=False)
    face: np.ndarray = field(init=False)
    face_ok: np.ndarray = field(init=False)
    listener: np.ndarray = field(init=False)
    listener_ok: np.ndarray = field(init=False)
    pose_history: Tensor | None = None
    pose_valid: bool = False
    rest: np.ndarray | None = None
    """The enrolled listener's resting face ``(58,)``; ``None`` for the generic listener."""
    gain: float = 1.0
    """Expressivity gain of an enrolled listener's expression (:data:`EXPRESSIVITY_POWER`)."""
    last: np.ndarray | None = None
    """The last frame ``(58,)`` sent, for the seam easing (:data:`EASE_FRAMES`)."""
    level: np.ndarray | None = None
    """Without feedback: the running level ``(58,)`` of the generated frames (see
    :data:`LEVEL_SECONDS`)."""
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        span = self.context + self.window  # the context plus frames past t not yet used
        self.audio = np.zeros((span, layout.AUDIO_FEATURE_DIM), np.float32)
        self.audio_ok = np.zeros(span, bool)
        self.face = np.zeros((span, layout.DIM), np.float32)
        self.face_ok = np.zeros(span, bool)
        self.listener = np.zeros((self.prev, layout.DIM), np.float32)
        self.listener_ok = np.zeros(self.prev, bool)
        self.generator = torch.Generator().manual_seed(self.seed)

    def push_speaker(self, audio: np.ndarray, audio_ok: np.ndarray, face: np.ndarray,
                     face_ok: np.ndarray) -> None:  # fmt: skip
        """Append ``n`` aligned speaker frames: audio ``(n, 78)``, face ``(n, 58)``, flags."""
        n = len(face)
        if audio.shape != (n, layout.AUDIO_FEATURE_DIM) or face.shape != (n, layout.DIM):
            raise ValueError(f"speaker frames: audio {audio.shape} and face {face.shape} must be "
                             f"(n, {layout.AUDIO_FEATURE_DIM}) and (n, {layout.DIM})")  # fmt: skip
        if audio_ok.shape != (n,) or face_ok.shape != (n,):
            raise ValueError("speaker frames: one audio and one face flag per frame")
        audio_ok, face_ok = audio_ok.astype(bool), face_ok.astype(bool)
        if not (np.isfinite(audio[audio_ok]).all() and np.isfinite(face[face_ok]).all()):
            raise ValueError("speaker frames: non-finite values in frames flagged valid (flag "
                             "them invalid instead)")  # fmt: skip
        self.audio = _push(self.audio, audio.astype(np.float32))
        self.audio_ok = _push(self.audio_ok, audio_ok.astype(bool))
        self.face = _push(self.face, face.astype(np.float32))
        self.face_ok = _push(self.face_ok, face_ok.astype(bool))
        self.received += n

    def discontinuity(self) -> None:
        """The speaker's coordinate frame changed: forget its earlier face frames."""
        self.face_ok[:] = False

    def ready(self) -> bool:
        """Whether the speaker's frames up to the next window's start have arrived and no more
        than one window beyond it (window ``[t, t + W)`` reads speaker frames ``< t`` only)."""
        return self.t <= self.received <= self.t + self.window

    def speaker_context(self, audio_lookahead: int = AUDIO_LOOKAHEAD) -> tuple[np.ndarray, ...]:
        """Speaker frames ``[t − C, t)``: audio, audio flags, face, face flags (``C`` rows).

        The audio features of the last ``audio_lookahead`` frames before ``t`` are not final at
        time ``t`` (their deltas read later audio), so they are flagged invalid, as in training.
        """
        end = len(self.face) - (self.received - self.t)
        rows = slice(end - self.context, end)
        audio_ok = self.audio_ok[rows].copy()
        if audio_lookahead:
            audio_ok[-audio_lookahead:] = False
        return self.audio[rows], audio_ok, self.face[rows], self.face_ok[rows]


class OnlineRunner:
    """Generates the next window of many sessions in one batch on ``device``."""

    def __init__(self, model: Denoiser, posnet: PosNet | None = None, *, steps: int | None = None,
                 device: torch.device | str = "cpu", guidance: float | None = None,
                 feedback: bool | None = None, ease_frames: int = EASE_FRAMES
                 ) -> None:  # fmt: skip
        guidance = model.config.sample_guidance if guidance is None else guidance
        self.feedback = model.config.sample_feedback if feedback is None else bool(feedback)
        if not 0.0 <= guidance <= 10.0:
            raise ValueError(f"guidance must be in [0, 10], got {guidance}")
        self.guidance = guidance
        self.model = model.eval().to(device)
        self.posnet = posnet.eval().to(device) if posnet is not None else None
        self.steps = steps
        self.device = torch.device(device)
        cfg = model.config
        self.window, self.context, self.prev = cfg.window, cfg.context, cfg.prev
        if not 0 <= ease_frames < cfg.window:
            raise ValueError(f"ease_frames must be in [0, {cfg.window}), got {ease_frames}")
        self.ease_frames = ease_frames
        self._targets = model.shift_targets()

    def new_session(self, *, seed: int, shifts: dict[str, tuple[Tensor, Tensor]] | None = None,
                    rest: Tensor | np.ndarray | None = None,
                    spread: float | None = None) -> Session:  # fmt: skip
        """A session for the generic listener (``shifts=None``, ``rest=None``) or an enrolled
        one. ``rest (58,)``, the listener's resting face from the enrolment, fills the previous
        frames the first window is conditioned on, so the reaction starts in the listener's own
        resting pose and tonus instead of from no listener frame at all. Without feedback
        (``sample_feedback`` off) no window sees previous frames; the resting face then anchors
        the level instead: each window is shifted by ``rest − level``, where ``level`` is the
        running average of the session's generated frames (:data:`LEVEL_SECONDS`), so the
        reaction moves like the generic one around this person's own resting face. ``spread``,
        the enrolment clip's expression spread, then also scales the expression about that
        level by the person's expressivity (:data:`EXPRESSIVITY_POWER`; only with ``rest``,
        without feedback and when the generator knows its population's spread). With ``shifts``
        as well, the gain is multiplied by ``GeneratorConfig.shift_spread_gain`` when the
        generator holds it, which restores the expression spread the shifts remove (both
        clipped together to :data:`EXPRESSIVITY_RANGE`)."""
        gain = self._gain(spread)
        if rest is not None:
            rest = np.asarray(rest.cpu() if isinstance(rest, Tensor) else rest, np.float32)
            if rest.shape != (layout.DIM,) or not np.isfinite(rest).all():
                raise ValueError(f"rest: expected {layout.DIM} finite numbers, got shape "
                                 f"{rest.shape}")  # fmt: skip
        if shifts is not None:
            for name, (a, b) in shifts.items():
                if name not in self._targets:
                    raise ValueError(f"shift for {name!r}, which this model does not shift")
                if (a.shape[0], b.shape[1]) != self._targets[name] or a.shape[1] != b.shape[0]:
                    raise ValueError(f"shift {name!r}: {tuple(a.shape)} @ {tuple(b.shape)} does "
                                     f"not fit {self._targets[name]}")  # fmt: skip
        compensation = self.model.config.shift_spread_gain
        if shifts is not None and compensation is not None:  # the spread the shifts remove
            gain = float(np.clip(gain * compensation, *EXPRESSIVITY_RANGE))
        session = Session(self.context, self.prev, self.window, seed, shifts, rest=rest,
                          gain=gain if rest is not None and not self.feedback else 1.0)
        if rest is not None and self.feedback:
            session.listener[:] = rest  # (P, 58): the resting face in every previous frame
            session.listener_ok[:] = True
        return session

    def _gain(self, spread: float | None) -> float:
        """The expressivity gain for an enrolment's expression spread (1 without one)."""
        if spread is None:
            return 1.0
        if isinstance(spread, bool) or not isinstance(spread, int | float | np.floating) \
                or not np.isfinite(spread) or spread < 0:
            raise ValueError(f"spread: expected a finite non-negative number, got {spread!r}")
        population = self.model.config.expression_spread
        if population is None:
            return 1.0
        lo, hi = EXPRESSIVITY_RANGE
        return float(np.clip((float(spread) / population) ** EXPRESSIVITY_POWER, lo, hi))

    def _batch_shifts(self, sessions: list[Session]) -> Shifts | None:
        if all(s.shifts is None for s in sessions):
            return None
        rank = self.model.config.shift_rank
        out: Shifts = {}
        for name, (n_out, n_in) in self._targets.items():
            a = torch.zeros(len(sessions), n_out, rank, device=self.device)
            b = torch.zeros(len(sessions), rank, n_in, device=self.device)
            for i, s in enumerate(sessions):
                if s.shifts is not None and name in s.shifts:
                    a[i], b[i] = s.shifts[name][0], s.shifts[name][1]
            out[name] = LowRank(a, b)
        return out

    @torch.no_grad()
    def step(self, sessions: list[Session]) -> list[np.ndarray]:
        """One window ``(W, 58)`` per session (all must be :meth:`Session.ready`)."""
        if not sessions:
            return []
        late = [i for i, s in enumerate(sessions) if not s.ready()]
        if late:
            raise ValueError(f"sessions {late} are not ready: the speaker's frames must reach "
                             "the window start and not run more than one window past it")

        def tensor(x: list[np.ndarray]) -> Tensor:
            return torch.from_numpy(np.stack(x)).to(self.device)

        ctx = [s.speaker_context() for s in sessions]
        audio, face = tensor([c[0] for c in ctx]), tensor([c[2] for c in ctx])
        face_ok, audio_ok = tensor([c[3] for c in ctx]), tensor([c[1] for c in ctx])
        prev, prev_ok = tensor([s.listener for s in sessions]), tensor([s.listener_ok
                                                                         for s in sessions])
        memory = self.model.encode(audio, face, face_ok, prev, prev_ok, audio_ok)
        uncond = None
        if self.guidance != 1.0:  # the same listener without the speaker: for guidance
            off = torch.zeros_like(face_ok)
            uncond = self.model.encode(audio, face, off, prev, prev_ok, off)
        noise = torch.stack([torch.randn(self.window, layout.DIM, generator=s.generator)
                             for s in sessions]).to(self.device)  # (B, W, 58)
        windows = sample_windows(self.model, memory, self._batch_shifts(sessions),
                                 steps=self.steps, generator=sessions[0].generator,
                                 x_T=noise, guidance=self.guidance, uncond=uncond)  # fmt: skip
        if not self.feedback:
            windows = self._anchor(sessions, windows)
        windows = self._smooth(sessions, self._ease(sessions, windows))
        out = []
        for s, w in zip(sessions, windows.cpu().numpy(), strict=True):
            if self.feedback:  # else no window sees previous frames
                s.listener = _push(s.listener, w)
                s.listener_ok = _push(s.listener_ok, np.ones(len(w), bool))
            s.t += self.window
            s.last = w[-1].copy()
            out.append(w)
        return out

    def _anchor(self, sessions: list[Session], windows: Tensor) -> Tensor:
        """Without feedback: shift enrolled sessions' windows to their resting level and scale
        their expression about it by the session's expressivity gain."""
        if all(s.rest is None for s in sessions):
            return windows
        rate = 1.0 - float(np.exp(-self.window / (LEVEL_SECONDS * layout.FPS)))
        out = windows.clone()
        for i, s in enumerate(sessions):
            if s.rest is None:
                continue
            mean = windows[i].mean(dim=0).cpu().numpy()  # (58,)
            level = mean if s.level is None else s.level
            offset = torch.from_numpy(s.rest - level).to(out.device, out.dtype)
            out[i] = out[i] + offset
            if s.gain != 1.0:  # rest + gain · (window − level) on the blendshapes
                expr = layout.EXPRESSION
                base = torch.from_numpy(level[expr]).to(out.device, out.dtype)  # (52,)
                out[i, :, expr] = out[i, :, expr] + (s.gain - 1.0) * (windows[i, :, expr] - base)
            s.level = level + rate * (mean - level)
        out[..., layout.EXPRESSION] = out[..., layout.EXPRESSION].clamp(0.0, 1.0)
        return out

    def _ease(self, sessions: list[Session], windows: Tensor) -> Tensor:
        """Fade the expression step at the seam out over the first ``ease_frames`` frames."""
        m = self.ease_frames
        if m == 0 or all(s.last is None for s in sessions):
            return windows
        expr = layout.EXPRESSION
        last = torch.stack([torch.from_numpy(s.last[expr]) if s.last is not None
                            else windows[i, 0, expr].cpu() for i, s in enumerate(sessions)])
        step = last.to(windows.device, windows.dtype) - windows[:, 0, expr]  # (B, 52)
        fade = 1.0 - torch.arange(1, m + 1, device=windows.device, dtype=windows.dtype) / (m + 1)
        out = windows.clone()
        out[:, :m, expr] = (out[:, :m, expr] + fade[None, :, None] * step[:, None]).clamp(0, 1)
        return out

    def _smooth(self, sessions: list[Session], windows: Tensor) -> Tensor:
        if self.posnet is None:
            return windows
        h = self.posnet.config.history
        history = torch.stack([s.pose_history if s.pose_history is not None
                               else torch.zeros(h, 6, device=self.device) for s in sessions])
        valid = torch.tensor([s.pose_valid for s in sessions], device=self.device)
        out, history, valid = smooth_step(self.posnet, windows, history, valid)
        for s, hist in zip(sessions, history, strict=True):
            s.pose_history, s.pose_valid = hist, True
        return out
