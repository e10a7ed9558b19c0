"""The synthetic dyadic world: procedural speakers with audio, trait-driven listeners, and the
REACT2024 on-disk layout (``docs/world.md`` documents the models and the trait → style map).

Public entry: :func:`make_world` with a :class:`WorldConfig`. The model pieces (scripts, the
speaker, the listener) are importable from their modules for tests and experiments.
"""

from models.data.world.config import (
    LISTENER_TRAIT_MAP,
    SPEAKER_TRAIT_MAP,
    ListenerStyle,
    SpeakerStyle,
    WorldConfig,
)
from models.data.world.writer import make_world, plan_world

__all__ = [
    "LISTENER_TRAIT_MAP",
    "SPEAKER_TRAIT_MAP",
    "ListenerStyle",
    "SpeakerStyle",
    "WorldConfig",
    "make_world",
    "plan_world",
]
