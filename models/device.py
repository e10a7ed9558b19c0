"""The compute device setting: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda``,
``cuda:N``."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``name`` names; asking for CUDA without it is a ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available")
    return device
