"""The personalisation checkpoint: style encoder and hypernetwork in one safetensors file.

Tensors are stored under ``style.`` and ``hyper.`` prefixes; the metadata holds the format tag,
both configs and the hypernetwork's targets (layer → (out, in)) as JSON, plus an ``extra`` object
the writer chooses (a training recipe stores its step, seed and metrics). An enrolment made with
the loaded pair carries their :func:`~models.personal.enrolment.model_hash`.
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

from models.personal.hyper import HyperConfig, HyperNetwork
from models.personal.style import StyleEncoder, StyleEncoderConfig

FORMAT = "rapport-personal/1"


def save_personal(style: StyleEncoder, hyper: HyperNetwork | None, path: str | Path,
                  extra: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write the style encoder (and the hypernetwork, when trained) atomically to ``path``."""
    path = Path(path)
    tensors = {f"style.{k}": v.detach().to("cpu", torch.float32).contiguous()
               for k, v in style.state_dict().items()}  # fmt: skip
    meta: dict[str, str] = {"format": FORMAT, "style_config": json.dumps(asdict(style.config)),
                            "extra": json.dumps(extra or {})}  # fmt: skip
    if hyper is not None:
        tensors.update({f"hyper.{k}": v.detach().to("cpu", torch.float32).contiguous()
                        for k, v in hyper.state_dict().items()})  # fmt: skip
        meta["hyper_config"] = json.dumps(asdict(hyper.config))
        meta["targets"] = json.dumps({n: list(s) for n, s in hyper.targets.items()})
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_personal(path: str | Path, *, device: torch.device | str = "cpu"
                  ) -> tuple[StyleEncoder, HyperNetwork | None, dict[str, Any]]:  # fmt: skip
    """``(style encoder, hypernetwork or None, extra)`` from :func:`save_personal`, in eval
    mode. A missing, foreign or damaged file is a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such personalisation checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a personalisation checkpoint (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")  # fmt: skip
    try:
        scfg = json.loads(meta["style_config"])
        scfg["dilations"] = tuple(scfg["dilations"])
        style = StyleEncoder(StyleEncoderConfig(**scfg))
        style.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("style.")})
        hyper = None
        if "hyper_config" in meta:
            targets = {n: tuple(s) for n, s in json.loads(meta["targets"]).items()}
            hyper = HyperNetwork(HyperConfig(**json.loads(meta["hyper_config"])), targets)
            hyper.load_state_dict({k[6:]: v for k, v in tensors.items()
                                   if k.startswith("hyper.")})  # fmt: skip
            hyper = hyper.to(device).eval()
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: damaged personalisation checkpoint ({err})") from err
    return style.to(device).eval(), hyper, extra
