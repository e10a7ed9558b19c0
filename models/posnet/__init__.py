"""PosNet: head-pose smoothing at the seams of online generated windows (PFLPosNet paper)."""

from models.posnet.losses import PosNetLossConfig, posnet_loss
from models.posnet.model import PosNet, PosNetConfig, load_posnet, save_posnet
from models.posnet.runner import PoseSmoother, smooth_step, step_sessions

__all__ = [
    "PosNet",
    "PosNetConfig",
    "PosNetLossConfig",
    "PoseSmoother",
    "load_posnet",
    "posnet_loss",
    "save_posnet",
    "smooth_step",
    "step_sessions",
]
