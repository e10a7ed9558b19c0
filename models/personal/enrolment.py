"""Enrolment: the small, serialisable result of enrolling one listener.

An enrolment is computed once per listener (one forward of the style encoder and the
hypernetwork, no gradients) and stored; at run time the low-rank factors of several listeners are
stacked into one batch for the denoiser (``stack``). On disk it is one safetensors file:

* tensors ``style`` ``(S,)``, ``a/<layer>`` ``(out, r)``, ``b/<layer>`` ``(r, in)`` and
  ``rest`` ``(58,)``, the listener's resting face (absent in enrolments made before it existed);
* metadata key ``enrolment``: JSON with the format tag, model hash, creation time (ISO 8601,
  UTC), seconds of valid video used, rank, target shapes and the clip's expression spread
  (:func:`expression_spread`; absent in enrolments made before it existed).

No pickle is involved. Loading checks the file against itself (every target present with the
recorded shape) and, when given, against the serving model's targets, rank and hash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save
from torch import Tensor, nn

from models.face.layout import DIM, EXPRESSION, FPS
from models.personal.hyper import Factors, HyperNetwork, Targets
from models.personal.style import StyleEncoder

FORMAT = "rapport.enrolment/1"
_META_KEY = "enrolment"
SPREAD_SECONDS = 10.0
"""Length of the chunks :func:`expression_spread` measures the movement in."""


def chunk_variances(coeffs: np.ndarray, seconds: float = SPREAD_SECONDS) -> np.ndarray:
    """``(n,)``: for each consecutive ``seconds``-long chunk of ``coeffs (T, 58)`` the summed
    variance of the 52 blendshapes over the chunk (a clip shorter than one chunk is one chunk;
    a shorter rest after the last full chunk is left out)."""
    x = np.asarray(coeffs, np.float64)[:, EXPRESSION]  # (T, 52)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"expression spread needs at least 2 frames of (T, {DIM}), got "
                         f"{tuple(np.shape(coeffs))}")  # fmt: skip
    n = max(1, int(round(seconds * FPS)))
    chunks = [x[i: i + n] for i in range(0, len(x) - n + 1, n)] or [x]
    return np.array([c.var(axis=0).sum() for c in chunks])  # (n,)


def expression_spread(coeffs: np.ndarray, seconds: float = SPREAD_SECONDS) -> float:
    """How much a face moves: the root of the mean over ``seconds``-long chunks of the summed
    blendshape variance (:func:`chunk_variances`). A person's spread divided by the training
    population's (the same over every train clip, ``GeneratorConfig.expression_spread``) is
    their expressivity; the online runner scales an enrolled listener's reaction by it."""
    return float(np.sqrt(chunk_variances(coeffs, seconds).mean()))


class EnrolmentMismatch(ValueError):
    """An enrolment does not fit the model it is used with (targets, rank or model hash)."""


@dataclass(frozen=True)
class Enrolment:
    """One listener's style and shifts; tensors are on the CPU, without a batch dim."""

    style: Tensor
    """(S,) unit style vector."""
    factors: Factors
    """Layer name → (a (out, r), b (r, in))."""
    model_hash: str
    """:func:`model_hash` of the style encoder and hypernetwork that made it."""
    created: str
    """ISO 8601 UTC time of enrolment."""
    seconds: float
    """Seconds of valid listener video used."""
    rest: Tensor | None = None
    """(58,) the listener's resting face: the per-coefficient median of the valid enrolment
    frames. The online generator starts from it; ``None`` in enrolments made before it existed."""
    spread: float | None = None
    """:func:`expression_spread` of the valid enrolment frames: how much this listener's face
    moves; ``None`` in enrolments made before it existed."""

    @property
    def rank(self) -> int:
        return next(iter(self.factors.values()))[0].shape[1]

    @property
    def targets(self) -> dict[str, tuple[int, int]]:
        """Layer name → (out, in), as the hypernetwork that made it was built with."""
        return {name: (a.shape[0], b.shape[1]) for name, (a, b) in self.factors.items()}

    def check(
        self, targets: Targets | None = None, rank: int | None = None, model_hash: str | None = None
    ) -> None:
        """Raise :class:`EnrolmentMismatch` naming what differs from the given model facts."""
        if rank is not None and rank != self.rank:
            raise EnrolmentMismatch(f"enrolment has rank {self.rank}, the model uses rank {rank}")
        if targets is not None:
            ours, theirs = self.targets, {n: tuple(s) for n, s in targets.items()}
            if ours != theirs:
                raise EnrolmentMismatch(
                    f"enrolment targets differ from the model's: {_diff(ours, theirs)}"
                )
        if model_hash is not None and model_hash != self.model_hash:
            raise EnrolmentMismatch(
                f"enrolment was made with model {self.model_hash}, the model is {model_hash}"
            )

    def to_bytes(self) -> bytes:
        """The enrolment as one safetensors blob with JSON metadata (what a store keeps)."""
        tensors = {"style": self.style.contiguous()}
        if self.rest is not None:
            tensors["rest"] = self.rest.contiguous()
        for name, (a, b) in self.factors.items():
            tensors[f"a/{name}"] = a.contiguous()
            tensors[f"b/{name}"] = b.contiguous()
        meta = {
            "format": FORMAT,
            "model_hash": self.model_hash,
            "created": self.created,
            "seconds": self.seconds,
            "rank": self.rank,
            "style_dim": int(self.style.shape[0]),
            "targets": {name: list(shape) for name, shape in self.targets.items()},
        }
        if self.spread is not None:
            meta["spread"] = self.spread
        return save(tensors, metadata={_META_KEY: json.dumps(meta)})

    def save(self, path: str | Path) -> None:
        """Write one safetensors file (:meth:`to_bytes`)."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        targets: Targets | None = None,
        rank: int | None = None,
        model_hash: str | None = None,
        name: str = "enrolment",
    ) -> Enrolment:
        """Read a blob written by :meth:`to_bytes`; check it against the model facts given.
        ``ValueError`` (naming ``name``) for anything that is not a valid enrolment."""
        try:
            tensors = load(data)
            raw = _metadata(data).get(_META_KEY)
        except Exception as exc:  # safetensors raises several types for corrupt input
            raise ValueError(f"{name}: not a safetensors enrolment ({exc})") from exc
        if raw is None:
            raise ValueError(f"{name}: not an enrolment file (no {_META_KEY!r} metadata)")
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            found = meta.get("format")
            raise ValueError(f"{name}: enrolment format {found!r}, expected {FORMAT!r}")
        r = int(meta["rank"])
        factors: Factors = {}
        for layer, (out, inp) in meta["targets"].items():
            a, b = tensors.get(f"a/{layer}"), tensors.get(f"b/{layer}")
            if a is None or b is None or a.shape != (out, r) or b.shape != (r, inp):
                raise ValueError(
                    f"{name}: factors of {layer!r} missing or not ({out}, {r}) / ({r}, {inp})"
                )
            factors[layer] = (a, b)
        rest = tensors.get("rest")
        if rest is not None and (rest.shape != (DIM,) or not torch.isfinite(rest).all()):
            raise ValueError(f"{name}: rest face must be {DIM} finite numbers, got "
                             f"{tuple(rest.shape)}")  # fmt: skip
        spread = meta.get("spread")
        if spread is not None and (isinstance(spread, bool) or not isinstance(spread, int | float)
                                   or not np.isfinite(spread) or spread < 0):
            raise ValueError(f"{name}: spread must be a finite non-negative number, got "
                             f"{spread!r}")  # fmt: skip
        enrolment = cls(
            style=tensors["style"],
            factors=factors,
            model_hash=meta["model_hash"],
            created=meta["created"],
            seconds=float(meta["seconds"]),
            rest=rest,
            spread=None if spread is None else float(spread),
        )
        enrolment.check(targets, rank, model_hash)
        return enrolment

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        targets: Targets | None = None,
        rank: int | None = None,
        model_hash: str | None = None,
    ) -> Enrolment:
        """Read a file written by :meth:`save`; check it against the model facts that are given."""
        return cls.from_bytes(Path(path).read_bytes(), targets=targets, rank=rank,
                              model_hash=model_hash, name=str(path))  # fmt: skip


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its JSON header)."""
    if len(data) < 8:
        raise ValueError("too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("truncated safetensors header")
    return json.loads(data[8 : 8 + n]).get("__metadata__") or {}


def _diff(ours: Mapping[str, tuple], theirs: Mapping[str, tuple]) -> str:
    """A short description of how two target dicts differ."""
    parts = []
    if missing := sorted(set(theirs) - set(ours)):
        parts.append(f"missing {missing}")
    if extra := sorted(set(ours) - set(theirs)):
        parts.append(f"extra {extra}")
    changed = [n for n in ours if n in theirs and ours[n] != theirs[n]]
    parts += [f"{n}: {ours[n]} here vs {theirs[n]} in the model" for n in changed]
    return "; ".join(parts)


def model_hash(*modules: nn.Module) -> str:
    """A short fingerprint of the modules' classes, configs and weights (``sha256:`` + 16 hex).

    Config fields a config class lists in ``hash_exclude`` (inference defaults such as the
    generator's sampler settings) are left out: retuning them keeps the model's identity."""
    digest = hashlib.sha256()
    for module in modules:
        config = getattr(module, "config", None)
        desc = asdict(config) if is_dataclass(config) else None
        for key in getattr(config, "hash_exclude", ()):  # settings that are not the model
            desc.pop(key, None)
        targets = getattr(module, "targets", None)
        header = {"class": type(module).__name__, "config": desc, "targets": targets}
        digest.update(json.dumps(header, sort_keys=True, default=list).encode())
        for name, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode, restoring each submodule's previous mode afterwards."""
    previous = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in previous:
            m.training = training


def enrol(
    style_encoder: StyleEncoder,
    hyper: HyperNetwork,
    coeffs: Tensor | np.ndarray,
    valid: Tensor | np.ndarray | None = None,
) -> Enrolment:
    """Enrol one listener from their own coefficients ``(T, 58)`` (``valid (T,)`` bool optional).

    The input is placed on the style encoder's device and dtype; one forward without gradients in
    eval mode (previous modes restored). Raises ``ValueError`` for fewer valid frames than the
    encoder needs, non-finite valid frames, or an encoder/hypernetwork style size mismatch.
    """
    param = next(style_encoder.parameters())
    x = torch.as_tensor(coeffs, dtype=param.dtype, device=param.device)  # (T, K)
    if x.ndim != 2:
        raise ValueError(f"coeffs: expected shape (T, K) for one listener, got {tuple(x.shape)}")
    if valid is None:
        mask = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)  # (T,)
    else:
        mask = torch.as_tensor(valid, device=x.device).to(torch.bool)  # (T,)
    if not torch.isfinite(x[mask]).all():
        raise ValueError("coeffs: non-finite values in frames marked valid")
    if style_encoder.config.style_dim != hyper.config.style_dim:
        raise ValueError(
            f"style encoder makes {style_encoder.config.style_dim}-d styles, "
            f"hypernetwork expects {hyper.config.style_dim}"
        )
    with _eval_mode(style_encoder, hyper), torch.no_grad():
        style = style_encoder(x[None], mask[None])  # (1, S)
        factors = hyper(style)  # name → (a (1, out, r), b (1, r, in))
    return Enrolment(
        style=style[0].cpu(),
        factors={name: (a[0].cpu(), b[0].cpu()) for name, (a, b) in factors.items()},
        model_hash=model_hash(style_encoder, hyper),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=int(mask.sum()) / FPS,
        rest=x[mask].median(dim=0).values.cpu(),  # (K,)
        spread=expression_spread(x[mask].cpu().numpy()),
    )


def stack(
    enrolments: Sequence[Enrolment],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Factors:
    """Batch L listeners for one forward: ``{name: (a (L, out, r), b (L, r, in))}``.

    All enrolments must share targets, rank and model hash (``EnrolmentMismatch`` otherwise).
    """
    if not enrolments:
        raise ValueError("stack needs at least one enrolment")
    first = enrolments[0]
    for i, other in enumerate(enrolments[1:], start=1):
        try:
            other.check(first.targets, first.rank, first.model_hash)
        except EnrolmentMismatch as err:
            raise EnrolmentMismatch(f"enrolment {i} does not match enrolment 0: {err}") from None
    factors: Factors = {}
    for name in first.factors:
        a = torch.stack([e.factors[name][0] for e in enrolments])  # (L, out, r)
        b = torch.stack([e.factors[name][1] for e in enrolments])  # (L, r, in)
        factors[name] = (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
    return factors


def enrolments_of(dataset: Any, style_encoder: StyleEncoder, hyper: HyperNetwork, *,  # noqa: ANN401
                  seed: int = 0, seconds: float = 10.0) -> Callable[[Any], Enrolment]:  # fmt: skip
    """``enrolment_of(sample)`` for evaluation: the sample's listener enrolled from a random
    ``seconds``-long crop of *another* of its clips in ``dataset`` (a ``ReactDataset``:
    ``dataset.history``), drawn from ``(seed, sample.index)`` so it is the same in every run
    and for every model scored; cached per sample."""
    cache: dict[int, Enrolment] = {}

    def enrolment_of(sample: Any) -> Enrolment:  # noqa: ANN401
        if sample.index not in cache:
            rng = np.random.default_rng([seed, sample.index])
            cache[sample.index] = enrol(style_encoder, hyper,
                                        dataset.history(sample.index, seconds, rng))
        return cache[sample.index]

    return enrolment_of
