"""The personality model: personalised cognition, cognition graph, 2D-GNN, joint gradients,
checkpoints and a toy problem where the traits determine the weights."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from models.face import layout
from models.generator.config import tiny_config
from models.generator.denoiser import Denoiser
from models.generator.loss import diffusion_loss
from models.generator.schedule import alphas_cumprod
from models.personal.hyper import HyperConfig, HyperNetwork, to_shifts
from models.personal.style import StyleEncoder, StyleEncoderConfig
from models.personality.checkpoint import load_personality, save_personality
from models.personality.cognition import (
    BLOCK_LINEARS,
    Cognition,
    cognition,
    cognition_layout,
    generic_tiles,
)
from models.personality.gnn import GNNConfig, GraphNet, Layer2D
from models.personality.graph import CognitionGraph, EdgeEncoder, GraphConfig
from models.personality.model import PersonalityConfig, PersonalityModel, variant_config

FRAMES = 40
SIZES = {"graph": {"node_dim": 4, "cnn_channels": (4, 4), "edge_dim": 8},
         "gnn": {"hidden": 16}, "seconds": FRAMES / layout.FPS}  # fmt: skip


def tiny_parts(layers: int = 2, seed: int = 0) -> tuple[Denoiser, StyleEncoder, HyperNetwork]:
    """A tiny generator, style encoder and hypernetwork; the hypernetwork's zero-initialised
    output is perturbed, as training leaves it (a fresh one makes a key of exactly zero)."""
    torch.manual_seed(seed)
    gen = Denoiser(dataclasses.replace(tiny_config(), layers=layers,
                                       shift_layers=("cross_attn_q", "ff_out", "head"))).eval()
    style = StyleEncoder(StyleEncoderConfig(width=16, style_dim=8, dilations=(1, 2), pool_heads=2,
                                            min_frames=FRAMES))  # fmt: skip
    hyper = HyperNetwork(HyperConfig(style_dim=8, rank=2, trunk_dim=16, hidden_dim=16,
                                     embed_dim=8, chunk_size=32), gen.shift_targets())  # fmt: skip
    with torch.no_grad():
        hyper.out_a.weight.normal_(0.0, 0.05)
    for p in gen.parameters():
        p.requires_grad_(False)
    return gen, style, hyper


def clips(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, FRAMES, layout.DIM, generator=g)


# -- personalised cognition -------------------------------------------------------------------


def test_cognition_is_generic_weights_plus_the_dense_key_on_shifted_layers() -> None:
    gen, style, hyper = tiny_parts()
    lay = cognition_layout(gen, list(hyper.targets))
    d = gen.config.d_model
    # tiles per block: 8 attention matrices of d x d, ff_in (2d x d) and ff_out (d x 2d): 12
    assert lay.blocks == 2 and len(lay.tiles) == 8 + 2 + 2
    assert [lay.tiles[k].layer for k in lay.personal] == ["cross_attn.q", "ff.fc_out",
                                                          "ff.fc_out"]
    factors = hyper(style(clips(3)))
    cog = cognition(gen, factors, lay)
    assert cog.theta.shape == (2, 12, d, d) and cog.key.shape == (3, 2, 3, d, d)
    a, b = factors["layers.1.ff.fc_out"]
    full = gen.layers[1].ff.fc_out.weight + torch.bmm(a, b)  # (3, d, 2d)
    theta_tau = cog.personalised(lay.personal)  # (3, N, Kp, d, d)
    assert torch.allclose(theta_tau[:, 1, 1], full[:, :, :d], atol=1e-6)
    assert torch.allclose(theta_tau[:, 1, 2], full[:, :, d:], atol=1e-6)
    assert torch.equal(generic_tiles(gen, lay)[0, BLOCK_LINEARS.index("self_attn.k")],
                       gen.layers[0].self_attn.k.weight)  # fmt: skip


def test_layout_refuses_a_hypernetwork_that_shifts_no_block() -> None:
    gen, _, _ = tiny_parts()
    with pytest.raises(ValueError, match="no layer of a generator block"):
        cognition_layout(gen, ["head"])


# -- 2D-GNN and edges -------------------------------------------------------------------------


def permuted(x: torch.Tensor, perm: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    for ax in axes:
        x = x.index_select(ax, perm)
    return x


def test_2d_gnn_layer_is_permutation_equivariant_and_degree_normalised() -> None:
    torch.manual_seed(1)
    b, n, v = 2, 5, 4
    layer = Layer2D(v, edges=True)
    nodes, edges = torch.randn(b, n, v, v), torch.randn(b, n, n, v, v)
    a = (torch.rand(b, n, n) > 0.4).float()
    a_norm = a / a.sum(-1, keepdim=True).clamp(min=1)
    out = layer(nodes, edges, a_norm)
    assert out.shape == (b, n, v, v) and (out >= 0).all()
    perm = torch.randperm(n)
    out_p = layer(permuted(nodes, perm, (1,)), permuted(edges, perm, (1, 2)),
                  permuted(a_norm, perm, (1, 2)))  # fmt: skip
    assert torch.allclose(out_p, permuted(out, perm, (1,)), atol=1e-5)
    # Eq. 9 by hand for one node: ReLU((1/d_n) Σ_m A_nm f_e(e_nm) ⊙ f_v(v_n))
    manual = sum(a[0, 2, m] * layer.f_e(edges[0, 2, m]) * layer.f_v(nodes[0, 2])
                 for m in range(n)) / a[0, 2].sum().clamp(min=1)  # fmt: skip
    assert torch.allclose(out[0, 2], torch.relu(manual), atol=1e-5)


def test_2d_gnn_messages_only_travel_along_edges_of_the_adjacency() -> None:
    torch.manual_seed(2)
    b, n, v = 1, 4, 3
    layer = Layer2D(v, edges=True)
    nodes, edges = torch.randn(b, n, v, v), torch.randn(b, n, n, v, v)
    a = torch.ones(b, n, n)
    a[0, 0, 3] = 0.0  # node 0 does not hear node 3
    a[0, 1] = 0.0  # node 1 is isolated
    a_norm = a / a.sum(-1, keepdim=True).clamp(min=1)
    out = layer(nodes, edges, a_norm)
    changed = edges.clone()
    changed[0, 0, 3] += 10.0
    assert torch.equal(layer(nodes, changed, a_norm)[0, 0], out[0, 0])
    assert torch.count_nonzero(out[0, 1]) == 0
    # the same edge to every neighbour: the degree normalisation makes the count irrelevant
    same = edges[:, :1, :1].expand(b, n, n, v, v)
    full = layer(nodes, same, torch.ones(b, n, n) / n)
    pair = layer(nodes[:, :2], same[:, :2, :2], torch.ones(b, 2, 2) / 2)
    assert torch.allclose(full[:, :2], pair, atol=1e-5)


@pytest.mark.parametrize("node,edges", [("matrix", True), ("matrix", False), ("vector", False)])
def test_graph_network_output_is_invariant_to_node_order(node: str, edges: bool) -> None:
    torch.manual_seed(3)
    net = GraphNet(GNNConfig(node_dim=4, node=node, edges=edges, hidden=8, pool_ratio=0.5))
    nodes, e = torch.randn(3, 6, 4, 4), torch.randn(3, 6, 6, 4, 4)
    out = net(nodes, e)
    assert out.shape == (3, 5) and ((out > 0) & (out < 1)).all()
    perm = torch.randperm(6)
    assert torch.allclose(net(permuted(nodes, perm, (1,)), permuted(e, perm, (1, 2))), out,
                          atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("node,edges", [("matrix", True), ("matrix", False), ("vector", False)])
def test_residual_layers_keep_the_nodes_when_every_unit_is_dead(node: str, edges: bool) -> None:
    torch.manual_seed(5)
    nodes, e = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 3, 4, 4)
    outs = {}
    for residual in (False, True):
        net = GraphNet(GNNConfig(node_dim=4, node=node, edges=edges, hidden=8, layers=2,
                                 residual=residual))  # fmt: skip
        with torch.no_grad():  # every layer's pre-activation is negative: ReLU gives zeros
            for layer in net.layers:
                lin = layer.f_v if node == "matrix" else layer.lin
                for name, p in lin.named_parameters():
                    p.copy_(torch.full_like(p, -1e3) if name == "bias" else torch.zeros_like(p))
                if node == "matrix" and edges:  # a gate of exactly 1
                    layer.f_e.left.zero_()
                    layer.f_e.right.zero_()
                    layer.f_e.bias.fill_(1.0)
        h, _ = net.embed(nodes, e)
        outs[residual] = h
    assert torch.count_nonzero(outs[False]) == 0
    assert torch.allclose(outs[True], nodes.flatten(2))
    perm = torch.randperm(3)
    net = GraphNet(GNNConfig(node_dim=4, node=node, edges=edges, hidden=8, residual=True))
    assert torch.allclose(net(permuted(nodes, perm, (1,)), permuted(e, perm, (1, 2))),
                          net(nodes, e), atol=1e-5)  # fmt: skip


def test_edge_encoder_gives_directed_matrix_edges_equivariant_in_the_nodes() -> None:
    torch.manual_seed(4)
    enc = EdgeEncoder(GraphConfig(node_dim=4, edge_dim=8), maps=6)
    eta = torch.randn(2, 3, 6, 4, 4)
    e = enc(eta)
    assert e.shape == (2, 3, 3, 4, 4)
    assert not torch.allclose(e[:, 0, 1], e[:, 1, 0])
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(enc(permuted(eta, perm, (1,))), permuted(e, perm, (1, 2)), atol=1e-5)


# -- the whole model --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["full", "matrix-no-edges", "vector-gcn", "direct"])
def test_every_variant_maps_clips_to_five_traits_in_range(variant: str) -> None:
    gen, style, hyper = tiny_parts()
    model = PersonalityModel(variant_config(variant, **SIZES), style, hyper, gen)
    assert model.config.variant == variant
    traits, factors = model(clips(3), gen)
    assert traits.shape == (3, 5) and ((traits > 0) & (traits < 1)).all()
    assert (factors is None) == (variant == "direct")


def test_joint_loss_reaches_hypernetwork_and_style_encoder_but_not_the_generator() -> None:
    gen, style, hyper = tiny_parts()
    model = PersonalityModel(variant_config("full", **SIZES), style, hyper, gen)
    x = clips(4)
    model.set_stats(x, gen)
    traits, factors = model(x, gen)
    trait_loss = torch.mean((traits - torch.rand(4, 5)) ** 2)
    trait_loss.backward(retain_graph=True)
    # the trait loss alone already reaches the enrolment path through the graph
    assert style.frame_in.weight.grad is not None and style.frame_in.weight.grad.abs().sum() > 0
    assert hyper.chunks.grad is not None and hyper.chunks.grad.abs().sum() > 0
    model.zero_grad()
    cfg = gen.config
    g = torch.Generator().manual_seed(0)
    batch = {"speaker_audio": torch.randn(4, cfg.context, 78, generator=g),
             "audio_valid": torch.ones(4, cfg.context),
             "speaker_face": torch.rand(4, cfg.context, 58, generator=g),
             "context_valid": torch.ones(4, cfg.context),
             "listener_prev": torch.rand(4, cfg.prev, 58, generator=g),
             "prev_valid": torch.ones(4, cfg.prev),
             "target": torch.rand(4, cfg.window, 58, generator=g),
             "target_valid": torch.ones(4, cfg.window)}  # fmt: skip
    ac = alphas_cumprod(cfg.diffusion_steps, cfg.schedule_offset)
    rec = diffusion_loss(gen, batch, ac, torch.Generator().manual_seed(1), to_shifts(factors))
    (trait_loss + rec).backward()
    for module in (style, hyper, model.graph, model.gnn):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(float(gr.abs().sum()) for gr in grads) > 0, type(module).__name__
    assert all(p.grad is None for p in gen.parameters())


def test_estimate_averages_evenly_spaced_crops_of_the_valid_frames() -> None:
    gen, style, hyper = tiny_parts()
    model = PersonalityModel(variant_config("full", **SIZES), style, hyper, gen).eval()
    clip = clips(1)[0].repeat(3, 1).numpy()  # (3 · FRAMES, 58)
    valid = np.ones(len(clip), dtype=bool)
    valid[:5] = False
    crops = model.crops(clip, valid)
    assert crops.shape == (2, FRAMES, layout.DIM)
    with torch.no_grad():
        expect = model(torch.from_numpy(crops), gen)[0].mean(0).numpy()
    assert np.allclose(model.estimate(clip, gen, valid), expect, atol=1e-6)
    assert model.training is False
    with pytest.raises(ValueError, match="valid frames"):
        model.estimate(clip[: FRAMES - 1], gen)
    clip[7, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.estimate(clip, gen)


def test_checkpoint_round_trip_keeps_outputs_and_version(tmp_path) -> None:
    gen, style, hyper = tiny_parts()
    model = PersonalityModel(variant_config("full", **SIZES), style, hyper, gen).eval()
    model.set_stats(clips(4), gen)
    path = save_personality(model, tmp_path / "p.safetensors", {"seed": 3})
    loaded, extra = load_personality(path, gen)
    assert extra == {"seed": 3} and loaded.version() == model.version()
    assert loaded.config == model.config
    x = clips(2, seed=5)
    with torch.no_grad():
        assert torch.allclose(loaded(x, gen)[0], model(x, gen)[0])
    other, _, _ = tiny_parts(seed=9)
    with pytest.raises(ValueError, match="trained on generator"):
        load_personality(path, other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_personality(tmp_path / "junk.safetensors", gen)


def test_version_changes_with_any_weight() -> None:
    gen, style, hyper = tiny_parts()
    model = PersonalityModel(variant_config("full", **SIZES), style, hyper, gen)
    before = model.version()
    with torch.no_grad():
        model.gnn.head[0].bias.add_(0.01)
    assert model.version() != before and before.startswith("rpr-")


# -- learning: traits that determine the weights ----------------------------------------------


def toy_cognitions(traits: torch.Tensor, lay, gen: Denoiser, seed: int) -> Cognition:
    """Keys made from the traits by fixed random matrices, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    d, kp = lay.width, len(lay.personal)
    basis = torch.randn(5, lay.blocks, kp, d, d, generator=torch.Generator().manual_seed(0))
    key = torch.einsum("bt,tnkxy->bnkxy", traits, basis) * 0.05
    key = key + 0.005 * torch.randn(key.shape, generator=g)
    return Cognition(generic_tiles(gen, lay), key)


def test_trained_graph_network_beats_the_mean_predictor_when_traits_set_the_weights() -> None:
    torch.manual_seed(0)
    gen, _, hyper = tiny_parts()
    lay = cognition_layout(gen, list(hyper.targets))
    cfg = variant_config("full", **SIZES)
    graph, net = CognitionGraph(cfg.graph, lay), GraphNet(cfg.gnn)
    g = torch.Generator().manual_seed(1)
    train_t, test_t = torch.rand(96, 5, generator=g), torch.rand(48, 5, generator=g)
    train_c, test_c = toy_cognitions(train_t, lay, gen, 1), toy_cognitions(test_t, lay, gen, 2)
    graph.set_stats(train_c)
    opt = torch.optim.Adam([*graph.parameters(), *net.parameters()], lr=3e-3)
    for step in range(150):
        idx = torch.randint(0, 96, (32,), generator=g)
        sub = Cognition(train_c.theta, train_c.key[idx])
        loss = torch.mean((net(*graph(sub)) - train_t[idx]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item()), step
    with torch.no_grad():
        pred = net(*graph(test_c))
    mse = torch.mean((pred - test_t) ** 2).item()
    baseline = torch.mean((train_t.mean(0) - test_t) ** 2).item()
    assert mse < 0.5 * baseline, (mse, baseline)


def test_configs_saved_before_residual_layers_load_as_plain_layers() -> None:
    cfg = variant_config("full", **SIZES)
    assert cfg.gnn.residual and cfg.gnn.pool_ratio == 1.0
    data = cfg.to_dict()
    assert PersonalityConfig.from_dict(data) == cfg
    del data["gnn"]["residual"]  # an older checkpoint's metadata
    assert PersonalityConfig.from_dict(data).gnn.residual is False
