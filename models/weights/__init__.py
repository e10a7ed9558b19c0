"""The bundled default weights and how everything downstream loads them.

``generator.safetensors`` (the denoiser), ``personal.safetensors`` (style encoder and
hypernetwork), ``posnet.safetensors`` and ``training.json`` (the command, seed, time and metrics
of the run that made them) are produced by ``python -m models.train default --data WORLD --out
RUN --install`` (see the README). :func:`load_default` returns them ready for inference.

``personality.safetensors`` (the personality model, ``python -m models.train personality ...
--install``) is optional: without it, or when it does not fit the generator, ``personality`` is
``None`` and ``personality_error`` says why; everything else loads as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from models.device import resolve_device
from models.generator.checkpoint import load_generator
from models.generator.denoiser import Denoiser
from models.personal.checkpoint import load_personal
from models.personal.hyper import HyperNetwork
from models.personal.style import StyleEncoder
from models.personality.checkpoint import load_personality
from models.personality.model import PersonalityModel
from models.posnet.model import PosNet, load_posnet

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent
__all__ = ["FILES", "WEIGHTS_DIR", "DefaultModels", "load_default", "resolve_device"]
FILES = ("generator.safetensors", "personal.safetensors", "posnet.safetensors")
PERSONALITY_FILE = "personality.safetensors"
"""Optional: the personality model (see the module docstring)."""


@dataclass
class DefaultModels:
    generator: Denoiser
    posnet: PosNet
    style: StyleEncoder
    hyper: HyperNetwork
    generator_meta: dict
    personality: PersonalityModel | None = None
    personality_error: str | None = None
    """Why ``personality`` is ``None`` (absent or unusable file)."""
    personality_version: str | None = None
    """``personality.version()``, computed once at load (it hashes every weight)."""


def load_default(device: str | torch.device = "auto", directory: str | Path | None = None
                 ) -> DefaultModels:  # fmt: skip
    """The bundled (or ``directory``'s) generator, PosNet, style encoder and hypernetwork, in
    eval mode on ``device``. Missing files are a ``FileNotFoundError`` naming the command that
    makes them."""
    root = Path(directory) if directory is not None else WEIGHTS_DIR
    dev = resolve_device(device) if isinstance(device, str) else device
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: missing {missing}; make them with `python -m "
                                "models.train default --data WORLD --out RUN --install`")
    generator, meta = load_generator(root / FILES[0], device=dev)
    style, hyper, _ = load_personal(root / FILES[1], device=dev)
    if hyper is None:
        raise ValueError(f"{root / FILES[1]}: holds no hypernetwork")
    posnet = load_posnet(root / FILES[2], device=dev)
    personality, why = load_optional_personality(root / PERSONALITY_FILE, generator, dev)
    version = personality.version() if personality is not None else None
    return DefaultModels(generator, posnet, style, hyper, meta, personality, why, version)


def load_optional_personality(path: Path, generator: Denoiser, device: torch.device
                              ) -> tuple[PersonalityModel | None, str | None]:  # fmt: skip
    """The personality model at ``path`` for ``generator``, or ``None`` and the reason."""
    if not path.is_file():
        return None, (f"no personality model ({path.name}); make it with `rapport train "
                      "personality --data WORLD --out RUN --install`")  # fmt: skip
    try:
        model, _ = load_personality(path, generator, device=device)
    except ValueError as err:
        log.warning("personality model not loaded: %s", err)
        return None, f"the personality model cannot be used: {err}"
    return model, None
