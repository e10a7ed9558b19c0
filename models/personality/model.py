"""The personality model: a person's behaviour → personalised cognition → Big-Five.

``coeffs (B, T, 58)`` of a person's own face → style encoder → hypernetwork → ``Key^τ`` (low-rank
factors) → ``Θ^τ = Θ + Key^τ`` of the frozen generator's blocks
(:mod:`~models.personality.cognition`) → cognition graph (:mod:`~models.personality.graph`) →
2D-GNN (:mod:`~models.personality.gnn`) → five traits in 0..1 (``TRAIT_NAMES`` order; higher =
more of the named trait, neuroticism not emotional stability).

The style encoder and hypernetwork are the model's *own* copies (initialised from the enrolment
path's and fine-tuned jointly with the graph network), so the live personalisation is untouched.
The generator is not part of the model: its weights ``Θ`` are an argument of ``forward``, as the
shared weights every person's key refines; :meth:`PersonalityModel.check_generator` makes sure
it is the one the model was trained with.

``cognition=False`` is the ablation without cognition simulation (the paper's V1): the traits
come from the style vector of the clip through an MLP, and generator, hypernetwork and graph are
not used.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.face.layout import FPS
from models.generator.denoiser import Denoiser
from models.personal.enrolment import model_hash
from models.personal.hyper import Factors, HyperNetwork
from models.personal.style import StyleEncoder
from models.personality.cognition import cognition, cognition_layout
from models.personality.gnn import GNNConfig, GraphNet
from models.personality.graph import CognitionGraph, GraphConfig


@dataclass(frozen=True)
class PersonalityConfig:
    """What the personality model is made of; sizes of its parts in their own configs."""

    graph: GraphConfig = field(default_factory=GraphConfig)
    gnn: GNNConfig = field(default_factory=GNNConfig)
    cognition: bool = True
    """False: traits straight from the style vector (no cognition simulation, ablation V1)."""
    direct_hidden: int = 64
    """Hidden width of the V1 head."""
    seconds: float = 10.0
    """Length of each clip crop the model reads (the enrolment length)."""
    max_crops: int = 8
    """At inference, predictions are averaged over up to this many evenly spaced crops."""

    def __post_init__(self) -> None:
        if self.graph.node_dim != self.gnn.node_dim:
            raise ValueError("graph.node_dim and gnn.node_dim differ")
        if self.graph.edges != self.gnn.edges:
            raise ValueError("graph.edges and gnn.edges differ")
        if self.seconds <= 0 or self.max_crops < 1:
            raise ValueError("seconds must be positive and max_crops at least 1")

    @property
    def variant(self) -> str:
        """A short name: ``direct``, ``vector-gcn``, ``matrix-no-edges`` or ``full``."""
        if not self.cognition:
            return "direct"
        if self.gnn.node == "vector":
            return "vector-gcn"
        return "full" if self.gnn.edges else "matrix-no-edges"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["graph"]["cnn_channels"] = list(self.graph.cnn_channels)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonalityConfig:
        values = dict(data)
        graph = dict(values.pop("graph", {}))
        if "cnn_channels" in graph:
            graph["cnn_channels"] = tuple(graph["cnn_channels"])
        gnn = dict(values.pop("gnn", {}))
        gnn.setdefault("residual", False)  # saved before the field existed: plain Eq. 9 layers
        return cls(graph=GraphConfig(**graph), gnn=GNNConfig(**gnn), **values)


def variant_config(variant: str, **sizes: Any) -> PersonalityConfig:
    """The config of a named variant (see :attr:`PersonalityConfig.variant`)."""
    edges = variant == "full"
    node = "vector" if variant == "vector-gcn" else "matrix"
    if variant not in ("direct", "vector-gcn", "matrix-no-edges", "full"):
        raise ValueError(f"unknown variant {variant!r}")
    graph_sizes = dict(sizes.pop("graph", {}))
    if "cnn_channels" in graph_sizes:
        graph_sizes["cnn_channels"] = tuple(graph_sizes["cnn_channels"])
    graph = GraphConfig(edges=edges, **graph_sizes)
    gnn = GNNConfig(node=node, edges=edges, node_dim=graph.node_dim, **sizes.pop("gnn", {}))
    return PersonalityConfig(graph=graph, gnn=gnn, cognition=variant != "direct", **sizes)


class PersonalityModel(nn.Module):
    """``coeffs`` of one or more persons (+ the generic generator) → traits (B, 5) in 0..1."""

    def __init__(self, config: PersonalityConfig, style: StyleEncoder, hyper: HyperNetwork,
                 generator: Denoiser) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.style, self.hyper = style, hyper
        self.layout = cognition_layout(generator, list(hyper.targets))
        self.generator_hash = model_hash(generator)
        if config.cognition:
            self.graph = CognitionGraph(config.graph, self.layout)
            self.gnn = GraphNet(config.gnn)
        else:
            s = style.config.style_dim
            self.direct = nn.Sequential(nn.Linear(s, config.direct_hidden), nn.GELU(),
                                        nn.Linear(config.direct_hidden, config.gnn.traits))

    @property
    def frames(self) -> int:
        """Frames of one crop."""
        return int(round(self.config.seconds * FPS))

    def check_generator(self, generator: Denoiser) -> None:
        """``ValueError`` unless ``generator`` holds the weights this model was trained on."""
        found = model_hash(generator)
        if found != self.generator_hash:
            raise ValueError(f"the personality model was trained on generator "
                             f"{self.generator_hash}, got {found}")  # fmt: skip

    def version(self) -> str:
        """A short fingerprint of every weight the estimate depends on (``rpr-`` + 12 hex)."""
        digest = hashlib.sha256(f"{model_hash(self)}|{self.generator_hash}".encode())
        return "rpr-" + digest.hexdigest()[:12]

    def factors(self, coeffs: Tensor, valid: Tensor | None = None) -> Factors:
        """The persons' keys as low-rank factors ``{layer: (a (B, out, r), b (B, r, in))}``."""
        return self.hyper(self.style(coeffs, valid))

    def forward(self, coeffs: Tensor, generator: Denoiser, valid: Tensor | None = None
                ) -> tuple[Tensor, Factors | None]:  # fmt: skip
        """Traits (B, 5) and the factors that made them (``None`` for the V1 variant), so a
        training recipe can also score the personalised generator with them."""
        traits, factors, _ = self.forward_style(coeffs, generator, valid)
        return traits, factors

    def forward_style(self, coeffs: Tensor, generator: Denoiser, valid: Tensor | None = None
                      ) -> tuple[Tensor, Factors | None, Tensor]:  # fmt: skip
        """:meth:`forward` and the style vectors (B, S) the keys were made from."""
        z = self.style(coeffs, valid)
        if not self.config.cognition:
            return torch.sigmoid(self.direct(z)), None, z
        factors = self.hyper(z)
        nodes, edges = self.graph(cognition(generator, factors, self.layout))
        return self.gnn(nodes, edges), factors, z

    @torch.no_grad()
    def set_stats(self, coeffs: Tensor, generator: Denoiser) -> None:
        """Standardise the style encoder's statistics (when it pools them) and the graph's
        CNN input on these (training) persons' crops."""
        if self.style.config.stats:
            self.style.set_stats(coeffs)
        if self.config.cognition:
            self.graph.set_stats(cognition(generator, self.factors(coeffs), self.layout))

    def crops(self, coeffs: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Up to ``max_crops`` evenly spaced crops ``(M, frames, 58)`` of a clip's valid frames;
        ``ValueError`` when fewer than one crop's worth are valid or the values are not finite."""
        x = np.asarray(coeffs, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"coeffs: expected (T, K), got {x.shape}")
        if valid is not None:
            x = x[np.asarray(valid, dtype=bool)]
        if not np.isfinite(x).all():
            raise ValueError("coeffs: non-finite values in valid frames")
        f = self.frames
        if len(x) < f:
            raise ValueError(f"personality needs {f} valid frames ({self.config.seconds:g} s); "
                             f"the clip has {len(x)}")  # fmt: skip
        m = min(self.config.max_crops, len(x) // f)
        starts = np.linspace(0, len(x) - f, m).round().astype(int)
        return np.stack([x[s: s + f] for s in starts])  # (M, frames, 58)

    @torch.no_grad()
    def estimate(self, coeffs: np.ndarray, generator: Denoiser,
                 valid: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Traits ``(5,)`` in 0..1 of the person in one clip ``(T, 58)``: the mean prediction
        over :meth:`crops`. Runs in eval mode on the model's device (previous mode restored)."""
        was = self.training
        self.eval()
        try:
            param = next(self.parameters())
            x = torch.from_numpy(self.crops(coeffs, valid)).to(param.device, param.dtype)
            traits, _ = self(x, generator)  # (M, 5)
        finally:
            self.train(was)
        return traits.mean(dim=0).cpu().numpy().astype(np.float64)
