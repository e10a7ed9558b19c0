"""Personalisation: style encoder, contrastive loss, hypernetwork and enrolments (tiny, CPU)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from models.face import layout
from models.personal.enrolment import Enrolment, EnrolmentMismatch, enrol, model_hash, stack
from models.personal.hyper import HyperConfig, HyperNetwork, to_shifts
from models.personal.style import StyleEncoder, StyleEncoderConfig, info_nce

TINY_STYLE = StyleEncoderConfig(width=32, style_dim=16, dilations=(1, 2, 4), pool_heads=2)
TINY_HYPER = HyperConfig(style_dim=16, rank=2, trunk_dim=32, hidden_dim=32, embed_dim=8,
                         chunk_size=16)  # fmt: skip
TINY_TARGETS = {"layers.0.q": (8, 8), "layers.0.ff.out": (8, 12), "head": (5, 8)}
REPORT_TARGETS = {
    "layers.0.cross_attn.q": (128, 128),
    "layers.1.cross_attn.q": (128, 128),
    "layers.0.ff.out": (128, 256),
    "layers.1.ff.out": (128, 256),
    "head": (58, 128),
}


@pytest.fixture(autouse=True)
def _seeded() -> Iterator[None]:
    # Module initialisation draws from the global generator; fork it so tests stay isolated.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def random_coeffs(gen: torch.Generator, *shape: int) -> Tensor:
    """Plausible coefficients: blendshapes in 0..1, pose in ±0.3."""
    x = torch.rand(*shape, layout.DIM, generator=gen)
    x[..., layout.POSE] = (x[..., layout.POSE] - 0.5) * 0.6
    return x


SIGNAL_DIMS = [layout.index(n) for n in ("pitch", "yaw", "mouthSmileLeft", "jawOpen")]


def make_persons(gen: torch.Generator, persons: int) -> tuple[Tensor, Tensor]:
    """Synthetic listeners who differ only in dynamics: each nods, sways, smiles and opens the
    jaw at their own frequencies ``(P, 4)`` Hz and typical amplitudes ``(P, 4)``."""
    freq = 0.3 + 2.2 * torch.rand(persons, len(SIGNAL_DIMS), generator=gen)
    amp = 0.05 + 0.15 * torch.rand(persons, len(SIGNAL_DIMS), generator=gen)
    return freq, amp


def person_clips(
    gen: torch.Generator, persons: tuple[Tensor, Tensor], clips: int, frames: int
) -> Tensor:
    """Fresh clips ``(P, N, T, 58)`` of every person. Per clip the amplitude (±20 %), the phase,
    the resting level of every coefficient and the noise are random, so levels say nothing."""
    freq, amp = persons[0][:, None], persons[1][:, None]  # (P, 1, 4)
    shape = (freq.shape[0], clips, len(SIGNAL_DIMS))
    amp = amp * (0.8 + 0.4 * torch.rand(shape, generator=gen))  # (P, N, 4)
    phase = 2 * math.pi * torch.rand(shape, generator=gen)  # (P, N, 4)
    t = torch.arange(frames) / layout.FPS  # (T,) seconds
    angle = 2 * math.pi * freq[..., None, :] * t[:, None] + phase[..., None, :]  # (P, N, T, 4)
    rest = 0.2 + 0.05 * torch.randn(*shape[:2], 1, layout.DIM, generator=gen)  # (P, N, 1, K)
    x = rest + 0.01 * torch.randn(*shape[:2], frames, layout.DIM, generator=gen)  # (P, N, T, K)
    x[..., SIGNAL_DIMS] += amp[..., None, :] * torch.sin(angle)
    return x


# --- style encoder ---------------------------------------------------------------------------


def test_style_shapes_and_unit_norm() -> None:
    enc = StyleEncoder(TINY_STYLE)
    style = enc(random_coeffs(torch.Generator().manual_seed(1), 3, 260))
    assert style.shape == (3, TINY_STYLE.style_dim)
    torch.testing.assert_close(style.norm(dim=-1), torch.ones(3))


def test_invalid_frames_do_not_affect_style() -> None:
    gen = torch.Generator().manual_seed(2)
    enc = StyleEncoder(TINY_STYLE).eval()
    x = random_coeffs(gen, 2, 320)
    valid = torch.ones(2, 320, dtype=torch.bool)
    valid[0, 100:140] = False  # a gap of lost tracking
    valid[1, :20] = valid[1, 300:] = False
    valid[1, torch.randperm(320, generator=gen)[:15]] = False  # scattered drop-outs
    changed = x.clone()
    changed[~valid] = random_coeffs(gen, int((~valid).sum())) * 5
    changed[0, 120, 3] = float("nan")
    assert torch.equal(enc(x, valid), enc(changed, valid))
    # ...while a change in a valid frame does move the style.
    moved = x.clone()
    moved[0, 200, layout.ROTATION] += 0.5
    assert not torch.equal(enc(x, valid)[0], enc(moved, valid)[0])
    # Invalid frames are absent, not zero-valued frames: a masked tail equals a shorter clip.
    tail = torch.ones(1, 320, dtype=torch.bool)
    tail[:, 260:] = False
    torch.testing.assert_close(enc(x[:1], tail), enc(x[:1, :260]), rtol=0, atol=1e-6)


def test_style_needs_ten_seconds() -> None:
    enc = StyleEncoder(StyleEncoderConfig())
    gen = torch.Generator().manual_seed(3)
    with pytest.raises(ValueError, match=r"at least 250 valid frames.*has 249 of 249"):
        enc(random_coeffs(gen, 1, 249))
    valid = torch.ones(2, 300, dtype=torch.bool)
    valid[1, :60] = False
    with pytest.raises(ValueError, match=r"sample 1 has 240 of 300"):
        enc(random_coeffs(gen, 2, 300), valid)
    assert enc(random_coeffs(gen, 1, 400)).shape == (1, 64)  # any T >= 250 is fine


def test_statistics_pooling_grows_from_a_plain_encoder_and_ignores_invalid_frames() -> None:
    gen = torch.Generator().manual_seed(4)
    plain = StyleEncoder(TINY_STYLE).eval()
    grown = plain.with_stats().eval()
    assert grown.config.stats and not plain.config.stats
    x = random_coeffs(gen, 3, 300)
    torch.testing.assert_close(grown(x), plain(x))  # the new layer starts at zero
    with pytest.raises(ValueError, match="already has statistics pooling"):
        grown.with_stats()
    with pytest.raises(ValueError, match="no statistics pooling"):
        plain.set_stats(x)
    stats = grown.statistics(x)
    features = layout.DIM + 6
    assert stats.shape == (3, 3 * features)
    torch.testing.assert_close(stats[:, :layout.DIM], x.mean(dim=1))  # mean of each coefficient
    torch.testing.assert_close(stats[:, features: features + layout.DIM], x.std(dim=1,
                                                                               correction=0))
    torch.testing.assert_close(stats[:, 2 * features: 2 * features + layout.DIM],
                               (x[:, 1:] - x[:, :-1]).abs().mean(dim=1))  # fmt: skip
    grown.set_stats(x)
    z = (grown.statistics(x) - grown.stats_mean) / grown.stats_std
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(3 * features), atol=1e-3, rtol=0)
    with torch.no_grad():
        grown.stats_in.weight.normal_(0, 0.1)
    assert not torch.allclose(grown(x), plain(x))  # now the statistics move the style
    valid = torch.ones(3, 300, dtype=torch.bool)
    valid[0, 100:150] = False
    changed = x.clone()
    changed[0, 100:150] = float("nan")
    assert torch.equal(grown(x, valid), grown(changed, valid))
    tail = torch.ones(1, 300, dtype=torch.bool)
    tail[:, 260:] = False
    torch.testing.assert_close(grown(x[:1], tail), grown(x[:1, :260]), rtol=0, atol=1e-6)


def test_info_nce_prefers_aligned_pairs_and_counts_all_positives() -> None:
    gen = torch.Generator().manual_seed(4)
    a = nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1)
    b = nn.functional.normalize(a + 0.1 * torch.randn(8, 16, generator=gen), dim=-1)
    assert info_nce(a, b) < info_nce(a, b[torch.roll(torch.arange(8), 1)]) - 1.0
    # Rows 0 and 1 are two clips of one person: as positives they lower the loss.
    a[1], b[1] = a[0], b[0]
    same = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    assert info_nce(a, b, same) < info_nce(a, b, torch.arange(8))


def nearest_neighbour_accuracy(styles: Tensor, who: Tensor) -> float:
    """Leave-one-out identification: is each style's nearest other style of the same person?"""
    sim = (styles @ styles.T).fill_diagonal_(-2.0)  # (N, N), never pick yourself
    return (who[sim.argmax(dim=1)] == who).float().mean().item()


def test_style_encoder_learns_to_identify_persons() -> None:
    gen = torch.Generator().manual_seed(5)
    count, test_clips, frames = 8, 4, 250
    persons = make_persons(gen, count)
    test = person_clips(gen, persons, test_clips, frames).flatten(0, 1)  # (P · N, T, K)
    who = torch.arange(count).repeat_interleave(test_clips)  # (P · N,)
    enc = StyleEncoder(TINY_STYLE)
    with torch.no_grad():
        untrained = nearest_neighbour_accuracy(enc(test), who)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        view_a, view_b = person_clips(gen, persons, 2, frames).unbind(1)  # 2 × (P, T, K)
        loss = info_nce(enc(view_a), enc(view_b), torch.arange(count))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])

    with torch.no_grad():
        accuracy = nearest_neighbour_accuracy(enc.eval()(test), who)
    chance = (test_clips - 1) / (count * test_clips - 1)
    message = f"accuracy {accuracy:.2f}, untrained {untrained:.2f}, chance {chance:.2f}"
    assert accuracy >= 0.75 and accuracy > untrained + 0.4, message


# --- hypernetwork ----------------------------------------------------------------------------


def test_hyper_shapes_and_zero_effect_at_init() -> None:
    hyper = HyperNetwork(TINY_HYPER, TINY_TARGETS)
    # a: 16 + 16 + 10 numbers → 1 + 1 + 1 chunks; b: 16 + 24 + 16 → 1 + 2 + 1 chunks.
    assert hyper.chunks.shape == (7, TINY_HYPER.embed_dim)
    style = nn.functional.normalize(torch.randn(3, TINY_HYPER.style_dim), dim=-1)
    factors = hyper(style)
    assert list(factors) == list(TINY_TARGETS)
    for name, (out, inp) in TINY_TARGETS.items():
        a, b = factors[name]
        assert a.shape == (3, out, 2) and b.shape == (3, 2, inp)
        assert torch.equal(a @ b, torch.zeros(3, out, inp))
        assert b.abs().min() > 0  # b carries information; only a starts at zero
    # Every layer reads its own chunks: same-shaped factors of two layers differ once a is live.
    nn.init.normal_(hyper.out_a.weight)
    factors = hyper(style)
    assert not torch.equal(factors["layers.0.q"][0], factors["layers.0.ff.out"][0])


def test_hyper_gradients_reach_trunk_and_chunks_after_one_step() -> None:
    hyper = HyperNetwork(TINY_HYPER, TINY_TARGETS)
    style = nn.functional.normalize(torch.randn(2, TINY_HYPER.style_dim), dim=-1)
    goal = {n: torch.randn(2, *s) for n, s in TINY_TARGETS.items()}
    opt = torch.optim.SGD(hyper.parameters(), lr=0.1)

    def backward() -> None:
        opt.zero_grad()
        factors = hyper(style)
        sum(((a @ b - goal[n]) ** 2).sum() for n, (a, b) in factors.items()).backward()

    backward()
    assert hyper.out_a.weight.grad.abs().sum() > 0  # a learns first (as LoRA's B)...
    assert hyper.trunk[0].weight.grad.abs().sum() == 0  # ...nothing else can while a is 0
    opt.step()
    backward()
    for param in (hyper.trunk[0].weight, hyper.chunks, hyper.head_z.weight, hyper.out_b.weight):
        assert param.grad.abs().sum() > 0


def test_hyper_is_small_for_the_report_config() -> None:
    hyper = HyperNetwork(HyperConfig(style_dim=64, rank=4), REPORT_TARGETS)
    count = sum(p.numel() for p in hyper.parameters())
    assert count == 207_296  # PerFRDiff's hypernetwork: ≈ 1.63 B
    assert count < 500_000


def test_different_styles_get_different_shifts_after_training() -> None:
    hyper = HyperNetwork(TINY_HYPER, TINY_TARGETS)
    style = nn.functional.normalize(torch.randn(2, TINY_HYPER.style_dim), dim=-1)
    goal = torch.randn(2, 8, 8)  # one wanted shift of layers.0.q per style
    opt = torch.optim.Adam(hyper.parameters(), lr=1e-2)
    delta = lambda: torch.bmm(*hyper(style)["layers.0.q"])  # noqa: E731  (2, 8, 8)
    assert torch.equal(delta()[0], delta()[1])  # both zero before training
    first = ((delta() - goal) ** 2).mean().item()
    for _ in range(30):
        loss = ((delta() - goal) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        d = delta()
    assert loss.item() < 0.8 * first
    assert (d[0] - d[1]).abs().mean() > 0.1 * d.abs().mean()


def test_to_shifts_wraps_low_rank_and_leaves_layers_unchanged_at_init() -> None:
    lowrank = pytest.importorskip("models.generator.lowrank")
    factors = HyperNetwork(TINY_HYPER, TINY_TARGETS)(torch.randn(2, TINY_HYPER.style_dim))
    shifts = to_shifts(factors)
    assert list(shifts) == list(TINY_TARGETS)
    assert all(isinstance(s, lowrank.LowRank) for s in shifts.values())
    assert torch.equal(shifts["head"].b, factors["head"][1])
    layer = nn.Linear(8, 5)  # the "head" target: (out 5, in 8)
    x = torch.randn(2, 7, 8)
    assert torch.equal(lowrank.shifted_linear(x, layer, shifts["head"]), layer(x))


# --- enrolment -------------------------------------------------------------------------------


@pytest.fixture()
def models() -> tuple[StyleEncoder, HyperNetwork]:
    hyper = HyperNetwork(TINY_HYPER, TINY_TARGETS)
    nn.init.normal_(hyper.out_a.weight)  # as if trained: a != 0, so listeners differ in a too
    return StyleEncoder(TINY_STYLE), hyper


def listener(seed: int, frames: int = 300) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    valid = torch.ones(frames, dtype=torch.bool)
    valid[10:30] = False
    return random_coeffs(gen, frames), valid


def test_enrol_is_one_eval_forward(models: tuple[StyleEncoder, HyperNetwork]) -> None:
    enc, hyper = models
    coeffs, valid = listener(6)
    e = enrol(enc, hyper, coeffs, valid)
    assert enc.training and hyper.training  # modes restored
    assert e.seconds == 280 / layout.FPS and e.rank == 2 and e.targets == TINY_TARGETS
    assert e.model_hash == model_hash(enc, hyper)
    with torch.no_grad():
        style = enc.eval()(coeffs[None], valid[None])
        a, b = hyper(style)["head"]
    assert torch.equal(e.style, style[0]) and torch.equal(e.factors["head"][0], a[0])
    assert not e.style.requires_grad
    with pytest.raises(ValueError, match="250 valid frames"):
        enrol(enc, hyper, *listener(6, frames=260))


def test_enrolment_round_trip_is_bit_exact(
    models: tuple[StyleEncoder, HyperNetwork], tmp_path: Path
) -> None:
    e = enrol(*models, *listener(7))
    path = tmp_path / "listener.safetensors"
    e.save(path)
    back = Enrolment.load(path, targets=TINY_TARGETS, rank=2, model_hash=e.model_hash)
    assert torch.equal(back.style, e.style)
    for name, (a, b) in e.factors.items():
        assert torch.equal(back.factors[name][0], a) and torch.equal(back.factors[name][1], b)
    assert (back.model_hash, back.created, back.seconds) == (e.model_hash, e.created, e.seconds)
    assert torch.equal(back.rest, e.rest)
    assert b"pickle" not in path.read_bytes()[:2000]


def test_resting_face_is_the_median_of_the_valid_frames(
    models: tuple[StyleEncoder, HyperNetwork],
) -> None:
    coeffs, valid = listener(9)
    coeffs[~valid] = 50.0  # frames without a face carry junk; they must not count
    e = enrol(*models, coeffs, valid)
    assert e.rest.shape == (layout.DIM,)
    torch.testing.assert_close(e.rest, coeffs[valid].median(dim=0).values)
    assert float(e.rest.abs().max()) < 50.0


def test_enrolment_without_or_with_a_bad_resting_face(
    models: tuple[StyleEncoder, HyperNetwork],
) -> None:
    e = enrol(*models, *listener(10))
    old = Enrolment.from_bytes(dataclasses.replace(e, rest=None).to_bytes())
    assert old.rest is None  # enrolments stored before the resting face existed still load
    bad = dataclasses.replace(e, rest=torch.full((layout.DIM,), float("nan")))
    with pytest.raises(ValueError, match="rest face must be 58 finite numbers"):
        Enrolment.from_bytes(bad.to_bytes())
    with pytest.raises(ValueError, match=r"rest face must be 58 finite numbers, got \(3,\)"):
        Enrolment.from_bytes(dataclasses.replace(e, rest=torch.zeros(3)).to_bytes())


def test_enrolment_for_another_model_is_rejected(
    models: tuple[StyleEncoder, HyperNetwork], tmp_path: Path
) -> None:
    path = tmp_path / "listener.safetensors"
    enrol(*models, *listener(8)).save(path)
    other = {**TINY_TARGETS, "layers.1.q": (8, 8)}
    with pytest.raises(EnrolmentMismatch, match=r"missing \['layers.1.q'\]"):
        Enrolment.load(path, targets=other)
    with pytest.raises(EnrolmentMismatch, match=r"head: \(5, 8\) here vs \(5, 9\)"):
        Enrolment.load(path, targets={**TINY_TARGETS, "head": (5, 9)})
    with pytest.raises(EnrolmentMismatch, match="rank 2, the model uses rank 4"):
        Enrolment.load(path, rank=4)
    with pytest.raises(EnrolmentMismatch, match="made with model"):
        Enrolment.load(path, model_hash="sha256:0000000000000000")


def test_stack_batches_listeners(models: tuple[StyleEncoder, HyperNetwork]) -> None:
    enrolments = [enrol(*models, *listener(seed)) for seed in (9, 10, 11)]
    batch = stack(enrolments)
    assert list(batch) == list(TINY_TARGETS)
    for name, (out, inp) in TINY_TARGETS.items():
        a, b = batch[name]
        assert a.shape == (3, out, 2) and b.shape == (3, 2, inp)
        for i, e in enumerate(enrolments):
            assert torch.equal(a[i], e.factors[name][0]) and torch.equal(b[i], e.factors[name][1])
    assert not torch.equal(batch["head"][0][0], batch["head"][0][1])
    smaller = HyperNetwork(TINY_HYPER, {"head": (5, 8)})
    with pytest.raises(EnrolmentMismatch, match="enrolment 1 does not match"):
        stack([enrolments[0], enrol(models[0], smaller, *listener(12))])


def test_enrolment_drives_the_real_denoiser() -> None:
    """Style encoder → hypernetwork → shifts → the generator's denoiser, end to end."""
    from models.generator.config import tiny_config
    from models.generator.denoiser import Denoiser
    from models.personal.enrolment import enrol, stack
    from models.personal.hyper import HyperConfig, HyperNetwork, to_shifts
    from models.personal.style import StyleEncoder, StyleEncoderConfig

    torch.manual_seed(0)
    den = Denoiser(tiny_config()).eval()
    cfg = den.config
    enc = StyleEncoder(StyleEncoderConfig(width=16, style_dim=8))
    hyper = HyperNetwork(HyperConfig(style_dim=8, rank=cfg.shift_rank, trunk_dim=16,
                                     hidden_dim=16, embed_dim=8), den.shift_targets())
    rng = torch.Generator().manual_seed(1)
    clips = [torch.rand(260, 58, generator=rng) * (k + 1) / 3 for k in range(2)]
    c, p, w = cfg.context, cfg.prev, cfg.window
    one = (torch.randn(1, w, 58, generator=rng), torch.full((1,), 500),
           torch.randn(1, c, 78, generator=rng), torch.rand(1, c, 58, generator=rng),
           torch.ones(1, c, dtype=torch.bool), torch.rand(1, p, 58, generator=rng),
           torch.ones(1, p, dtype=torch.bool))  # fmt: skip
    args = tuple(x.repeat(2, *([1] * (x.dim() - 1))) for x in one)  # the same input twice
    with torch.no_grad():
        generic = den(*args)
        fresh = to_shifts(stack([enrol(enc, hyper, x) for x in clips]))
        assert torch.equal(den(*args, shifts=fresh), generic)  # a fresh hypernetwork: no effect
        for layer in hyper.modules():  # as after training: the a-head produces non-zero factors
            if isinstance(layer, torch.nn.Linear) and not layer.weight.any():
                layer.weight.normal_(0, 0.5)
        shifted = den(*args, shifts=to_shifts(stack([enrol(enc, hyper, x) for x in clips])))
    assert not torch.allclose(shifted, generic)
    assert not torch.allclose(shifted[0], shifted[1])  # same input, two listeners, two outputs


def test_a_generator_fingerprint_ignores_the_sampler_defaults() -> None:
    from models.generator.config import tiny_config
    from models.generator.denoiser import Denoiser

    model = Denoiser(tiny_config())
    before = model_hash(model)
    model.config = dataclasses.replace(model.config, sample_steps=2, sample_guidance=2.0,
                                       sample_feedback=False)  # fmt: skip
    assert model_hash(model) == before  # retuning the live sampler keeps the identity
    model.config = dataclasses.replace(model.config, pose_weight=2.0)
    assert model_hash(model) != before  # any other field is part of it
    with torch.no_grad():
        model.config = tiny_config()
        next(model.parameters()).add_(1e-3)
    assert model_hash(model) != before  # and so is every weight


def test_expression_spread_of_chunks_and_of_an_enrolment(
    models: tuple[StyleEncoder, HyperNetwork],
) -> None:
    from models.personal.enrolment import chunk_variances, expression_spread

    rng = np.random.default_rng(0)
    x = np.zeros((600, layout.DIM), np.float32)
    x[:250, :52] = rng.normal(0.5, 0.1, (250, 52))  # chunk 1: 52 · 0.01 of variance
    x[250:500, :52] = rng.normal(0.5, 0.2, (250, 52))  # chunk 2: 52 · 0.04
    x[:, 52:] = rng.normal(0, 5.0, (600, 6))  # pose does not count
    v = chunk_variances(x)  # the last 100 frames are less than a chunk: left out
    assert v.shape == (2,)
    np.testing.assert_allclose(v, [0.52, 2.08], rtol=0.15)
    assert expression_spread(x) == pytest.approx(float(np.sqrt(v.mean())))
    assert expression_spread(np.full((300, layout.DIM), 0.3)) == pytest.approx(0.0, abs=1e-9)
    assert chunk_variances(x[:100]).shape == (1,)  # shorter than a chunk: one chunk
    with pytest.raises(ValueError, match="at least 2 frames"):
        expression_spread(x[:1])
    coeffs, valid = listener(12)
    coeffs[~valid] = 50.0  # junk frames without a face must not count
    e = enrol(*models, coeffs, valid)
    assert e.spread == pytest.approx(expression_spread(coeffs[valid].numpy()), rel=1e-5)
    back = Enrolment.from_bytes(e.to_bytes())
    assert back.spread == e.spread
    old = Enrolment.from_bytes(dataclasses.replace(e, spread=None).to_bytes())
    assert old.spread is None  # enrolments stored before the spread existed still load
    for bad in (float("nan"), -0.5):
        with pytest.raises(ValueError, match="spread must be a finite non-negative number"):
            Enrolment.from_bytes(dataclasses.replace(e, spread=bad).to_bytes())
