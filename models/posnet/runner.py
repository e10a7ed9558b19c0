"""Applying PosNet window after window: the per-session state and one pure step.

:func:`smooth_step` is the whole computation, a pure function of the model, the new window and
the state; :class:`PoseSmoother` holds the state of one session (or of S sessions stacked as
rows) between windows, and :func:`step_sessions` runs several smoothers in one batched forward.
No server code, no timers: the caller decides when a window arrives and when the pose stream
breaks.

State per session: the last H adjusted pose frames (H, 6) and a ``valid`` flag, nothing else, so
it never grows. A session starts invalid: its first window passes through unchanged and seeds the
history. :meth:`PoseSmoother.discontinuity` (e.g. the session re-anchored its PFL window, so the
old poses are in another frame) makes the next window pass through and re-seed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from models.face import layout
from models.posnet.model import POSE_DIM, PosNet


@torch.no_grad()
def smooth_step(model: PosNet, frames: Tensor, history: Tensor,
                valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Adjust one window per session and advance the state.

    ``frames`` (S, W, 58), ``history`` (S, H, 6), ``valid`` (S,) bool. Returns the adjusted
    ``(S, W, 58)`` (only ``layout.POSE`` changed) and the next ``(history, valid)``: the last H
    adjusted pose frames (for a row that was not valid, its window's first frame repeated where
    W < H) and all True.
    """
    out = model.adjust(frames, history, valid)  # (S, W, 58)
    pose = out[..., layout.POSE]  # (S, W, P)
    H = history.shape[1]
    seed = pose[:, :1].expand(-1, H, -1)  # (S, H, P)
    base = torch.where(valid[:, None, None], history, seed)  # (S, H, P)
    next_history = torch.cat([base, pose], dim=1)[:, -H:]  # (S, H + W, P) → (S, H, P)
    return out, next_history.contiguous(), torch.ones_like(valid)


class PoseSmoother:
    """PosNet state for ``sessions`` independent pose streams, stepped one window at a time.

    ``device`` and ``dtype`` of the state default to the model's parameters; windows given to
    :meth:`step` must already be there.
    """

    def __init__(self, model: PosNet, *, sessions: int = 1, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:  # fmt: skip
        if sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {sessions}")
        param = next(model.parameters())
        self.model = model
        self.sessions = sessions
        self.device = torch.device(device) if device is not None else param.device
        self.dtype = dtype if dtype is not None else param.dtype
        H = model.config.history
        self.history = torch.zeros(sessions, H, POSE_DIM, device=self.device, dtype=self.dtype)
        self.valid = torch.zeros(sessions, dtype=torch.bool, device=self.device)

    @property
    def window(self) -> int:
        return self.model.config.window

    def reset(self) -> None:
        """Forget every session's history: the next window passes through and re-seeds it."""
        self.history.zero_()
        self.valid.zero_()

    def discontinuity(self, session: int | None = None) -> None:
        """Mark a break in the pose stream of ``session`` (all sessions when None): its next
        window passes through unchanged and re-seeds the history."""
        if session is None:
            self.valid.zero_()
        else:
            self.valid[session] = False

    def step(self, frames: Tensor) -> Tensor:
        """Adjust the next window: ``(W, 58)`` for one session or ``(S, W, 58)`` for all S;
        returns the same shape with only ``layout.POSE`` changed."""
        single = frames.dim() == 2
        batch = frames[None] if single else frames  # (S, W, 58)
        self._check(batch)
        out, self.history, self.valid = smooth_step(self.model, batch, self.history, self.valid)
        return out[0] if single else out

    def _check(self, frames: Tensor) -> None:
        expected = (self.sessions, self.window, layout.DIM)
        if frames.dim() != 3 or tuple(frames.shape) != expected:
            raise ValueError(f"frames: expected {expected} (or ({self.window}, {layout.DIM}) for "
                             f"one session), got {tuple(frames.shape)}")  # fmt: skip
        if frames.device != self.device or frames.dtype != self.dtype:
            raise ValueError(f"frames: expected {self.dtype} on {self.device}, "
                             f"got {frames.dtype} on {frames.device}")  # fmt: skip


def step_sessions(smoothers: Sequence[PoseSmoother], frames: Tensor) -> Tensor:
    """Step several smoothers sharing one model in a single forward pass.

    ``frames`` (N, W, 58) holds each smoother's ``sessions`` rows in order (N = their sum). The
    result equals calling each smoother's :meth:`~PoseSmoother.step` on its own rows.
    """
    if not smoothers:
        raise ValueError("step_sessions needs at least one smoother")
    model = smoothers[0].model
    if any(s.model is not model for s in smoothers):
        raise ValueError("step_sessions: every smoother must share one model")
    sizes = [s.sessions for s in smoothers]
    if frames.dim() != 3 or frames.shape[0] != sum(sizes):
        raise ValueError(f"frames: expected ({sum(sizes)}, W, {layout.DIM}), "
                         f"got {tuple(frames.shape)}")  # fmt: skip
    history = torch.cat([s.history for s in smoothers])  # (N, H, P)
    valid = torch.cat([s.valid for s in smoothers])  # (N,)
    out, history, valid = smooth_step(model, frames, history, valid)
    for s, h, v in zip(smoothers, history.split(sizes), valid.split(sizes), strict=True):
        s.history, s.valid = h.contiguous(), v.contiguous()
    return out
