"""Personality estimates for the API: computing, packing the behaviour they are computed from,
and the response contract (trait names, scale, polarity, caveat).

Synchronous; the API runs :func:`estimate` in a worker thread, never on the event loop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from models.data.react_layout import TRAIT_NAMES
from models.face import layout
from models.weights import DefaultModels
from server.errors import ServiceError

POLARITY = {
    "openness": "higher = more open",
    "conscientiousness": "higher = more conscientious",
    "extraversion": "higher = more extraverted",
    "agreeableness": "higher = more agreeable",
    "neuroticism": "higher = more neurotic",
}
"""What a higher score means, per trait (neuroticism, not emotional stability)."""

CAVEAT = (
    "Estimated from about 10 s of facial behaviour by a model trained on the simulated persons of "
    "Rapport's synthetic world (unless the operator retrained it on real data with self-reported "
    "traits). It is not a psychological assessment and must not be used to make decisions about "
    "people. The EU AI Act prohibits inferring emotions of natural persons from biometric data "
    "in the workplace and in education institutions (Art. 5(1)(f)); do not use it there."
)

_BEHAVIOUR_KEY = "coeffs"


class PersonalityUnavailable(ServiceError):
    """No usable personality model is loaded."""

    code = "personality_unavailable"
    status = 503


class PersonalityConsent(ServiceError):
    """The listener was enrolled without consent: no personality for them."""

    code = "consent_required"
    status = 409


class PersonalityNotKept(ServiceError):
    """The listener's behaviour was not kept, so the estimate cannot be (re)computed."""

    code = "personality_not_computable"
    status = 409


@dataclass(frozen=True)
class Estimate:
    traits: dict[str, float]
    """Trait name → value in 0..1 (``TRAIT_NAMES`` order)."""
    model_version: str
    computed_at: dt.datetime


def behaviour_blob(coeffs: np.ndarray, valid: np.ndarray | None = None) -> bytes:
    """The valid frames of a clip's coefficients ``(T, 58)`` as a safetensors blob (float32)."""
    x = np.asarray(coeffs, dtype=np.float32)
    if valid is not None:
        x = x[np.asarray(valid, dtype=bool)]
    return save({_BEHAVIOUR_KEY: np.ascontiguousarray(x)}, metadata={"fps": str(layout.FPS)})


def behaviour_from_blob(blob: bytes) -> np.ndarray:
    """Inverse of :func:`behaviour_blob`: ``(T, 58)`` float32; ``ValueError`` if damaged."""
    try:
        x = load(blob)[_BEHAVIOUR_KEY]
    except Exception as exc:  # safetensors raises several types for corrupt input
        raise ValueError(f"stored behaviour is unreadable ({exc})") from exc
    if x.ndim != 2 or x.shape[1] != layout.DIM:
        raise ValueError(f"stored behaviour has shape {x.shape}")
    return x


def model_version(models: DefaultModels) -> str:
    """The loaded personality model's version; :class:`PersonalityUnavailable` without one."""
    if models.personality is None:
        raise PersonalityUnavailable(models.personality_error or "no personality model loaded")
    return models.personality_version or models.personality.version()


def estimate(models: DefaultModels, coeffs: np.ndarray, valid: np.ndarray | None = None
             ) -> Estimate:  # fmt: skip
    """The Big-Five of the person in a clip ``(T, 58)``; :class:`PersonalityUnavailable`
    without a model, ``ValueError`` for a clip the model cannot read (too few valid frames)."""
    version = model_version(models)
    values = models.personality.estimate(coeffs, models.generator, valid)
    traits = {name: float(np.clip(v, 0.0, 1.0)) for name, v in zip(TRAIT_NAMES, values,
                                                                    strict=True)}  # fmt: skip
    return Estimate(traits, version, dt.datetime.now(dt.UTC))


def payload(traits: dict[str, float], version: str, at: dt.datetime,
            listener_id: str | None) -> dict[str, Any]:  # fmt: skip
    """The response body of both personality routes."""
    return {
        "listener_id": listener_id,
        "model_version": version,
        "computed_at": at.astimezone(dt.UTC).isoformat(),
        "traits": [{"name": n, "value": float(traits[n]), "scale": [0, 1],
                    "polarity": POLARITY[n]} for n in TRAIT_NAMES],
        "caveat": CAVEAT,
    }  # fmt: skip
