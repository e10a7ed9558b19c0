"""Self-generated previous frames for training: the denoiser's own recent output, as live.

Live, the listener's previous frames that condition window ``[t, t + W)`` are the generator's
own output. A denoiser trained only on real previous frames learns that they are an excellent
predictor of the next 320 ms (a face changes little in that time) and leans on them more than on
the speaker; live, its own slightly-off frames then carry it along and the speaker's influence
fades (on 56 val samples of the default world, the bundled weights of that time, trained on real
previous frames only, scored an FRCorr per prediction of 0.045 fed their own previous frames and
0.073 given none at all; 2 sampler steps, no guidance). :func:`self_generated_prev` closes that
gap: it replays the ``depth`` windows before ``t`` with the model itself, exactly as the online
runner would (same encoder inputs, the live few-step sampler, the model's output fed back), and
returns those frames as the previous frames of the window at ``t``. A recipe trains a share of
its windows on them (``TrainGeneratorConfig.rollout``), so the model learns to read the speaker
rather than echo itself.

Inputs are a batch of :class:`~models.data.torch_windows.WindowDataset` items built with
``history = depth · W`` extra frames: speaker context of ``C + depth·W`` frames and listener
previous frames of ``P + depth·W`` frames, both ending at ``t``.

Dimensions: B batch, W window, C context, P previous frames, R depth, H = R·W history.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from models.data.windows import AUDIO_LOOKAHEAD
from models.generator.denoiser import Denoiser, sample_windows
from models.generator.lowrank import Shifts


def split_history(batch: Mapping[str, Tensor], model: Denoiser, depth: int) -> dict[str, Tensor]:
    """The batch's fields for the window at ``t`` alone (the last ``C`` context rows and the last
    ``P`` previous rows), as a plain :class:`WindowDataset` item batch of the model's sizes."""
    cfg = model.config
    h = depth * cfg.window
    _check(batch, cfg.context + h, cfg.prev + h)
    out = dict(batch)
    for key in ("speaker_audio", "audio_valid", "speaker_face", "context_valid"):
        out[key] = batch[key][:, -cfg.context:]
    for key in ("listener_prev", "prev_valid"):
        out[key] = batch[key][:, -cfg.prev:]
    return out


@torch.no_grad()
def self_generated_prev(model: Denoiser, batch: Mapping[str, Tensor], depth: int, *,
                        steps: int, guidance: float, generator: torch.Generator,
                        shifts: Shifts | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``(prev (B, P, 58), prev_valid (B, P) bool)``: the model's own last ``P`` frames before
    ``t`` after generating the ``depth`` windows ``[t − R·W, t)`` one by one.

    The first replayed window starts from the real listener frames before it; each later one
    from the model's output. Frames at positions before 0 (the clip had not started) stay
    invalid, as a live session starts with none. The model is run in eval mode (no dropout)
    and left in the mode it was in.
    """
    cfg = model.config
    w, c, p = cfg.window, cfg.context, cfg.prev
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    h = depth * w
    _check(batch, c + h, p + h)
    audio, face = batch["speaker_audio"], batch["speaker_face"]  # (B, C + H, 78), (B, C + H, 58)
    audio_ok = batch["audio_valid"] > 0  # (B, C + H)
    face_ok = batch["context_valid"] > 0  # (B, C + H)
    prev = batch["listener_prev"][:, :p]  # (B, P, 58): real frames before the first replay
    prev_ok = batch["prev_valid"][:, :p] > 0  # (B, P)
    t = batch["t"].to(face.device)  # (B,)
    was_training = model.training
    model.eval()
    try:
        for r in range(depth):
            rows = slice(r * w, r * w + c)
            a_ok = audio_ok[:, rows].clone()  # (B, C)
            a_ok[:, c - AUDIO_LOOKAHEAD:] = False  # not final at this window's start, as live
            f_ok = face_ok[:, rows]
            memory = model.encode(audio[:, rows], face[:, rows], f_ok, prev, prev_ok, a_ok)
            uncond = None
            if guidance != 1.0:
                off = torch.zeros_like(f_ok)
                uncond = model.encode(audio[:, rows], face[:, rows], off, prev, prev_ok, off)
            x = sample_windows(model, memory, shifts, steps=steps, generator=generator,
                               guidance=guidance, uncond=uncond)  # (B, W, 58)
            start = t - h + r * w  # (B,) position of the replayed window's first frame
            pos = start[:, None] + torch.arange(w, device=t.device)  # (B, W)
            prev = torch.cat([prev, x], dim=1)[:, -p:]  # (B, P + W, 58) -> (B, P, 58)
            prev_ok = torch.cat([prev_ok, pos >= 0], dim=1)[:, -p:]  # (B, P)
    finally:
        model.train(was_training)
    return prev, prev_ok


def _check(batch: Mapping[str, Tensor], context: int, prev: int) -> None:
    got = (batch["speaker_face"].shape[1], batch["listener_prev"].shape[1])
    if got != (context, prev):
        raise ValueError(f"batch has {got[0]} context and {got[1]} previous frames; the rollout "
                         f"needs {context} and {prev} (WindowDataset history)")  # fmt: skip
