"""Generator checkpoints: the denoiser's weights in one safetensors file, its config beside them.

The file holds every tensor of ``Denoiser.state_dict()`` (the normalisation buffers included,
so a loaded model normalises exactly as it was trained) and string metadata:

- ``format``: :data:`FORMAT`; ``version``: :data:`VERSION` (a newer file is refused);
- ``config``: :meth:`GeneratorConfig.to_dict` as JSON;
- ``extra``: a JSON object the writer chooses (a training recipe stores its step, seed, the
  provenance of the data statistics and its own config).

Inference code loads with :func:`load_generator`; training code never needs more than
:func:`save_generator`. Every problem with a file is a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.generator.config import GeneratorConfig
from models.generator.denoiser import Denoiser

FORMAT = "rapport-generator"
VERSION = 1


class CheckpointError(ValueError):
    """A generator checkpoint that is unreadable, of another kind, or does not fit the model."""


def save_generator(model: Denoiser, path: str | Path, extra: dict[str, Any] | None = None
                   ) -> Path:  # fmt: skip
    """Write ``model`` to ``path`` (safetensors), atomically: a temporary file beside it is
    renamed over ``path``. ``extra`` must be JSON-serialisable. Returns ``path``."""
    path = Path(path)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous()
               for name, t in model.state_dict().items()}  # fmt: skip
    metadata = {"format": FORMAT, "version": str(VERSION),
                "config": json.dumps(model.config.to_dict()),
                "extra": json.dumps(extra or {})}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """``{"version", "config" (GeneratorConfig), "extra" (dict)}`` of a checkpoint, without
    reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such generator checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a generator checkpoint "
                              f"(format {raw.get('format')!r}, expected {FORMAT!r})")  # fmt: skip
    try:
        version = int(raw.get("version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: bad version {raw.get('version')!r}") from None
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this code "
                              f"reads ({VERSION})")  # fmt: skip
    try:
        config = GeneratorConfig.from_dict(json.loads(raw["config"]))
        extra = json.loads(raw.get("extra", "{}"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: bad config metadata ({err})") from err
    return {"version": version, "config": config, "extra": extra}


def load_generator(path: str | Path, *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32, config: GeneratorConfig | None = None
                   ) -> tuple[Denoiser, dict[str, Any]]:  # fmt: skip
    """The :class:`Denoiser` stored at ``path`` in eval mode, and its metadata
    (:func:`read_metadata`). ``config``: the config the caller expects; a checkpoint with
    another is a :class:`CheckpointError` listing the fields that differ."""
    path = Path(path)
    meta = read_metadata(path)
    stored: GeneratorConfig = meta["config"]
    if config is not None and config != stored:
        want, got = config.to_dict(), stored.to_dict()
        diff = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
        raise CheckpointError(f"{path}: config differs from the expected one "
                              f"(field: expected, stored): {diff}")  # fmt: skip
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable tensors ({err})") from err
    model = Denoiser(stored)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: tensors do not fit its config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")  # fmt: skip
    model.load_state_dict(tensors)
    return model.to(device=device, dtype=dtype).eval(), meta
