"""Personality checkpoints: one safetensors file with every tensor of the model and, as JSON
metadata, the format tag, :meth:`PersonalityConfig.to_dict`, the style encoder's and
hypernetwork's configs and targets, the hash of the generator it was trained on, and an
``extra`` object the writer chooses (a recipe's seed, steps and metrics).

Loading needs the generator (the model reads its weights); a different generator than the one
the checkpoint was trained on is refused, since the estimate would be meaningless.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.generator.denoiser import Denoiser
from models.personal.hyper import HyperConfig, HyperNetwork
from models.personal.style import StyleEncoder, StyleEncoderConfig
from models.personality.model import PersonalityConfig, PersonalityModel

FORMAT = "rapport-personality/1"


def save_personality(model: PersonalityModel, path: str | Path,
                     extra: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``model`` atomically to ``path``; returns ``path``."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
               for k, v in model.state_dict().items()}  # fmt: skip
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()),
            "style_config": json.dumps(asdict(model.style.config)),
            "hyper_config": json.dumps(asdict(model.hyper.config)),
            "targets": json.dumps({n: list(s) for n, s in model.hyper.targets.items()}),
            "generator_hash": model.generator_hash, "version": model.version(),
            "extra": json.dumps(extra or {})}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_personality(path: str | Path, generator: Denoiser, *, device: torch.device | str = "cpu"
                     ) -> tuple[PersonalityModel, dict]:  # fmt: skip
    """``(model in eval mode, extra)``; ``ValueError`` naming the file for a missing, foreign or
    damaged checkpoint, or one trained on another generator."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such personality checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a personality checkpoint (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")  # fmt: skip
    try:
        config = PersonalityConfig.from_dict(json.loads(meta["config"]))
        scfg = json.loads(meta["style_config"])
        scfg["dilations"] = tuple(scfg["dilations"])
        style = StyleEncoder(StyleEncoderConfig(**scfg))
        targets = {n: tuple(s) for n, s in json.loads(meta["targets"]).items()}
        hyper = HyperNetwork(HyperConfig(**json.loads(meta["hyper_config"])), targets)
        model = PersonalityModel(config, style, hyper, generator)
        model.load_state_dict(tensors)
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: damaged personality checkpoint ({err})") from err
    if meta.get("generator_hash") != model.generator_hash:
        raise ValueError(f"{path}: trained on generator {meta.get('generator_hash')}, the loaded "
                         f"generator is {model.generator_hash}; retrain it (rapport train "
                         "personality)")  # fmt: skip
    return model.to(device).eval(), extra
