"""PosNet: re-smooths the head pose of each generated window where it meets the previous one.

The online generator emits windows of W frames; inside a window the pose is smooth, but where one
window meets the next the 6 pose dims (``layout.POSE``: rotation 3 + translation 3) jump. PosNet
(PFLPosNet paper, Eq. 13) adjusts only those 6 dims of each new window from the last adjusted
pose frame(s) of the previous window and an encoding of the new window's poses; the 52
expression dims pass through untouched.

Network, for one window (B sessions, H history frames, W window frames, D width, P = 6 dims)::

    anchor = new[:, 0]                                   first new pose frame (B, P)
    code   = Enc(new - anchor)                           Conv1d k3 + ReLU, ×2, mean over W (B, D)
    hist   = prev - anchor                               last H adjusted frames (B, H, P)
    corr   = MLP(code ⊕ flat(hist)) · taper              3 linear layers → (B, W, P)
    out    = new + corr        (residual)   or   anchor + MLP(...)   (not residual)

Everything is expressed relative to the first new frame, so a constant offset added to all poses
moves the output by the same offset. With ``residual`` (the default) the last layer starts at
zero, so an untrained PosNet is the identity, and the correction is scaled by a fixed ``taper``
(1 at the seam, 1/W at the last frame): the correction is largest where the windows meet and
fades into the window, so the adjusted stream rejoins the generator's own track instead of
drifting from it. Rows whose ``prev_valid`` is False (a first window, or one after a
discontinuity such as a PFL re-anchor) are returned exactly as given.

Differences from the paper (REACT_DATA.md §6.3): width 128 instead of 512; ``history`` frames
instead of the single last frame; inputs relative to the first new frame; residual output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from models.face import layout

POSE_DIM = layout.POSE.stop - layout.POSE.start
"""The 6 pose dims PosNet adjusts (rotation then translation, ``layout.POSE`` order)."""


@dataclass(frozen=True)
class PosNetConfig:
    window: int = 8
    """W: frames per generated window (the generator's window, ARCHITECTURE.md §4)."""
    hidden: int = 128
    """D: width of the encoder convolutions and of the MLP."""
    history: int = 2
    """H: last adjusted frames of the previous window the MLP sees (the paper uses 1)."""
    residual: bool = True
    """Predict a tapered correction on top of the new pose (identity at init) instead of the
    pose itself (the paper)."""
    kernel: int = 3
    """Temporal kernel of the encoder convolutions (odd)."""

    def __post_init__(self) -> None:
        if self.window < 2 or self.hidden < 1 or self.history < 1:
            raise ValueError(
                "PosNetConfig needs window >= 2, hidden >= 1 and history >= 1, got "
                f"window={self.window}, hidden={self.hidden}, history={self.history}"
            )
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"PosNetConfig.kernel must be odd and >= 1, got {self.kernel}")


class PosNet(nn.Module):
    """Pose adjustment for one new window given the previous window's last adjusted frames."""

    def __init__(self, config: PosNetConfig) -> None:
        super().__init__()
        self.config = config
        W, H, D, k = config.window, config.history, config.hidden, config.kernel
        self.encoder = nn.Sequential(
            nn.Conv1d(POSE_DIM, D, k, padding=k // 2),
            nn.ReLU(),
            nn.Conv1d(D, D, k, padding=k // 2),
            nn.ReLU(),
        )
        self.mlp = nn.Sequential(
            nn.Linear(D + H * POSE_DIM, D),
            nn.ReLU(),
            nn.Linear(D, D),
            nn.ReLU(),
            nn.Linear(D, W * POSE_DIM),
        )
        if config.residual:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        # (W, 1): 1 at the seam frame, falling linearly to 1/W at the last frame.
        taper = (W - torch.arange(W, dtype=torch.float32)) / W
        self.register_buffer("taper", taper[:, None], persistent=False)

    def forward(self, prev_pose: Tensor, new_pose: Tensor, prev_valid: Tensor) -> Tensor:
        """``prev_pose`` (B, H, 6) last adjusted frames, oldest first; ``new_pose`` (B, W, 6)
        the generator's window; ``prev_valid`` (B,) bool. Returns the adjusted (B, W, 6)."""
        self._check(prev_pose, new_pose, prev_valid)
        B, W = new_pose.shape[:2]
        anchor = new_pose[:, :1]  # (B, 1, P)
        rel = (new_pose - anchor).transpose(1, 2)  # (B, P, W)
        code = self.encoder(rel).mean(dim=-1)  # (B, D)
        hist = (prev_pose - anchor).flatten(1)  # (B, H·P)
        out = self.mlp(torch.cat([code, hist], dim=1))  # (B, D + H·P) → (B, W·P)
        out = out.view(B, W, POSE_DIM)  # (B, W, P)
        if self.config.residual:
            adjusted = new_pose + out * self.taper.to(out.dtype)
        else:
            adjusted = anchor + out
        return torch.where(prev_valid[:, None, None], adjusted, new_pose)

    def adjust(self, frames: Tensor, prev_pose: Tensor, prev_valid: Tensor) -> Tensor:
        """``frames`` (B, W, 58) coefficients → (B, W, 58) with only ``layout.POSE`` replaced by
        :meth:`forward`; every other dim is copied bit for bit."""
        if frames.dim() != 3 or frames.shape[-1] != layout.DIM:
            raise ValueError(f"frames: expected (B, W, {layout.DIM}), got {tuple(frames.shape)}")
        out = frames.clone()
        out[..., layout.POSE] = self(prev_pose, frames[..., layout.POSE], prev_valid)
        return out

    def _check(self, prev_pose: Tensor, new_pose: Tensor, prev_valid: Tensor) -> None:
        W, H = self.config.window, self.config.history
        if new_pose.dim() != 3 or new_pose.shape[1:] != (W, POSE_DIM):
            raise ValueError(f"new_pose: expected (B, {W}, {POSE_DIM}), "
                             f"got {tuple(new_pose.shape)}")  # fmt: skip
        B = new_pose.shape[0]
        if prev_pose.shape != (B, H, POSE_DIM):
            raise ValueError(f"prev_pose: expected ({B}, {H}, {POSE_DIM}), "
                             f"got {tuple(prev_pose.shape)}")  # fmt: skip
        if prev_valid.shape != (B,) or prev_valid.dtype != torch.bool:
            raise ValueError(f"prev_valid: expected ({B},) bool, "
                             f"got {tuple(prev_valid.shape)} {prev_valid.dtype}")  # fmt: skip


def save_posnet(model: PosNet, path: str | Path) -> None:
    """Write the weights to ``path`` (safetensors) with the config as JSON in its metadata."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(asdict(model.config))})


def load_posnet(path: str | Path, *, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> PosNet:  # fmt: skip
    """A :class:`PosNet` rebuilt from the config stored by :func:`save_posnet`, in eval mode."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path}: no PosNet config in the checkpoint metadata")
    model = PosNet(PosNetConfig(**json.loads(meta["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.to(device=device, dtype=dtype).eval()
