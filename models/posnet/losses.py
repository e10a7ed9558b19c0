"""PosNet training losses: seam continuity, first- and second-difference smoothness, fidelity.

For one row: the previous window's last adjusted frames p_{-H} .. p_{-1} (fixed, no gradient),
the generator's new window n_0 .. n_{W-1} and PosNet's adjusted window x_0 .. x_{W-1}, all in the
6 pose dims. ``s = [p_{-H} .. p_{-1}, x_0 .. x_{W-1}]`` is the joined stream.

- **seam** (paper Eq. 15, generalised): ``|x_0 - x̂_0|`` where x̂_0 extrapolates the previous
  frames: with ``seam_order = 2`` and H >= 2 at constant velocity, ``x̂_0 = 2 p_{-1} - p_{-2}``
  (so the seam step ``x_0 - p_{-1}`` matches the last step ``p_{-1} - p_{-2}``); with
  ``seam_order = 1`` or H = 1, ``x̂_0 = p_{-1}`` (the paper's position continuity).
- **first_diff** (paper Eq. 16, extended across the seam): mean ``|s_{i+1} - s_i|`` over the
  steps that end in the new window: the seam step ``x_0 - p_{-1}`` and the W - 1 inside steps.
- **second_diff** (REACT code's second-difference smoothness, in place of the paper's Eq. 17
  which differences absolute steps): mean ``|s_{i+2} - 2 s_{i+1} + s_i|`` over the second
  differences that reach the new window (2 across the seam when H >= 2, W - 2 inside).
- **fidelity** (ours, not in the paper): mean ``|x_i - n_i|``, so PosNet removes the seam jump
  without flattening the real motion of the window. L1 rather than L2 keeps every term in the
  units of the pose, so the weights balance the same way whatever the motion's scale.

Every term is a mean over frames and the 6 dims, each dim weighted as REACT_DATA.md §6.2 lists
for the generator's second-difference loss: rotation × 5, translation × 10. The same dim weights
apply to all four terms, so they say how much each dim counts while the term weights say how the
terms trade off. Rows whose ``prev_valid`` is False have no previous frames: they contribute no
seam term and only their inside differences.

Term weights: seam 1 and first_diff 1 are the paper's λ1 = λ2 = 1. second_diff is 1 rather
than the paper's λ3 = 0.2 because our term penalises curvature (|Δ²|), which the paper's signed
Eq. 17 does not. fidelity 1 is ours. In a sweep on the synthetic setting of
``tests/models/test_posnet.py`` (W = 8, jumps of std 0.05, 200 steps) these defaults cut the
seam/inside velocity ratio 6.9× while changing the pose by 0.010 on average (the raw seam step
is 0.058); fidelity 2 cut it only 2.5×, fidelity 0.5 cut it 7.1× but changed more (0.013);
second_diff 0.2 cut it 8.2× but left the track further from the true motion; position
continuity (seam_order 1) cut it only 3.5×.
The paper's optional "connect spread" and transition terms are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.face import layout

_P = layout.POSE.start
ROTATION = slice(layout.ROTATION.start - _P, layout.ROTATION.stop - _P)
"""Rotation (pitch, yaw, roll) within the 6 pose dims."""
TRANSLATION = slice(layout.TRANSLATION.start - _P, layout.TRANSLATION.stop - _P)
"""Translation (tx, ty, tz) within the 6 pose dims."""
POSE_DIM = layout.POSE.stop - _P


@dataclass(frozen=True)
class PosNetLossConfig:
    seam: float = 1.0
    """Weight of the seam continuity term (paper λ1)."""
    first_diff: float = 1.0
    """Weight of the first-difference smoothness term (paper λ2)."""
    second_diff: float = 1.0
    """Weight of the second-difference smoothness term (paper λ3 = 0.2 on its Eq. 17)."""
    fidelity: float = 1.0
    """Weight of the L1 distance to the unadjusted window (ours)."""
    seam_order: int = 2
    """1: the first adjusted frame continues the last one's position; 2: its velocity."""
    rotation_weight: float = 5.0
    """Per-dim weight of pitch, yaw and roll (REACT_DATA.md §6.2)."""
    translation_weight: float = 10.0
    """Per-dim weight of tx, ty and tz (REACT_DATA.md §6.2)."""

    def __post_init__(self) -> None:
        if self.seam_order not in (1, 2):
            raise ValueError(f"PosNetLossConfig.seam_order must be 1 or 2, got {self.seam_order}")

    def dim_weights(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """(6,) per-dim weights in ``layout.POSE`` order."""
        w = torch.empty(POSE_DIM, device=device, dtype=dtype)
        w[ROTATION] = self.rotation_weight
        w[TRANSLATION] = self.translation_weight
        return w


def _weighted_mean(values: Tensor, keep: Tensor, dim_w: Tensor) -> Tensor:
    """Mean of ``|values|`` (B, N, P) · ``dim_w`` (P,) over the (B, N) entries where ``keep``."""
    per_step = (values.abs() * dim_w).mean(dim=-1)  # (B, N)
    count = keep.sum()
    return (per_step * keep).sum() / count.clamp(min=1)


def _difference_term(seq: Tensor, order: int, history: int, valid: Tensor, dim_w: Tensor) -> Tensor:
    """Mean |order-th difference| of ``seq`` (B, H + W, P) over the differences that reach the
    new window; for rows not ``valid`` only those inside it."""
    diffs = torch.diff(seq, n=order, dim=1)  # (B, H + W - order, P)
    start = torch.arange(diffs.shape[1], device=seq.device)  # first frame each difference uses
    reaches_new = start + order >= history  # (N,)
    inside_new = start >= history  # (N,)
    keep = reaches_new[None, :] & (inside_new[None, :] | valid[:, None])  # (B, N)
    return _weighted_mean(diffs, keep, dim_w)


def posnet_loss(adjusted: Tensor, new_pose: Tensor, prev_pose: Tensor, prev_valid: Tensor,
                config: PosNetLossConfig) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """Total loss and its unweighted terms for adjusted windows.

    ``adjusted`` (B, W, 6) PosNet's output, ``new_pose`` (B, W, 6) its input window,
    ``prev_pose`` (B, H, 6) the previous adjusted frames (oldest first), ``prev_valid`` (B,)
    bool. Returns ``(total, {"seam", "first_diff", "second_diff", "fidelity"})``.
    """
    if adjusted.shape != new_pose.shape or adjusted.dim() != 3:
        raise ValueError(f"adjusted {tuple(adjusted.shape)} and new_pose "
                         f"{tuple(new_pose.shape)} must be the same (B, W, 6)")  # fmt: skip
    H = prev_pose.shape[1]
    dim_w = config.dim_weights(adjusted.device, adjusted.dtype)  # (P,)
    prev_pose = prev_pose.detach()
    seq = torch.cat([prev_pose, adjusted], dim=1)  # (B, H + W, P)

    last = prev_pose[:, -1]  # (B, P)
    if config.seam_order == 2 and H >= 2:
        expected = 2 * last - prev_pose[:, -2]  # constant-velocity extrapolation (B, P)
    else:
        expected = last
    every_frame = torch.ones(adjusted.shape[:2], dtype=torch.bool, device=adjusted.device)
    seam_err = (adjusted[:, :1] - expected[:, None]).transpose(0, 1)  # (1, B, P)
    terms = {
        "seam": _weighted_mean(seam_err, prev_valid[None, :], dim_w),
        "first_diff": _difference_term(seq, 1, H, prev_valid, dim_w),
        "second_diff": _difference_term(seq, 2, H, prev_valid, dim_w),
        "fidelity": _weighted_mean(adjusted - new_pose, every_frame, dim_w),
    }
    total = (config.seam * terms["seam"] + config.first_diff * terms["first_diff"]
             + config.second_diff * terms["second_diff"] + config.fidelity * terms["fidelity"])
    return total, terms
