"""The generator core: denoiser masks and shapes, low-rank shifts, cosine schedule, DDIM, loss."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn

from models.face import layout
from models.generator.config import SHIFT_LAYER_KINDS, GeneratorConfig, tiny_config
from models.generator.denoiser import Denoiser, sample_windows
from models.generator.loss import diffusion_loss
from models.generator.lowrank import LowRank, shifted_linear
from models.generator.sampler import ddim_sample, few_step_sample
from models.generator.schedule import alphas_cumprod, q_sample, sampling_timesteps

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(autouse=True)
def one_thread():
    """Width-16 tensors: intra-op threads only add synchronisation (and stall badly on a busy
    machine), so these tests run single-threaded and restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(cfg: GeneratorConfig, b: int, seed: int, device: str = "cpu"
               ) -> dict[str, torch.Tensor]:  # fmt: skip
    """A WindowDataset-shaped batch (float masks). Targets lie on a low-dimensional manifold
    (4 latent factors and a linear drift through sigmoids), as faces do."""
    g = torch.Generator().manual_seed(seed)
    c, p, w = cfg.context, cfg.prev, cfg.window
    face = torch.rand(b, c, layout.DIM, generator=g)
    face[..., layout.POSE] = 0.4 * torch.rand(b, c, 6, generator=g) - 0.2
    code = torch.randn(b, 1, 4, generator=g)  # (B, 1, 4)
    drift = 0.1 * torch.randn(layout.DIM, generator=g) * torch.arange(w)[:, None]  # (W, 58)
    logits = code @ torch.randn(4, layout.DIM, generator=g) + drift - 1.0  # (B, W, 58)
    target = torch.sigmoid(logits)
    target[..., layout.POSE] = 0.2 * torch.tanh(logits[..., layout.POSE])
    batch = {
        "speaker_audio": torch.randn(b, c, layout.AUDIO_FEATURE_DIM, generator=g),
        "audio_valid": torch.ones(b, c),
        "speaker_face": face,
        "context_valid": torch.ones(b, c),
        "listener_prev": torch.rand(b, p, layout.DIM, generator=g),
        "prev_valid": torch.ones(b, p),
        "target": target,
        "target_valid": torch.ones(b, w),
    }
    return {k: v.to(device) for k, v in batch.items()}


def make_model(cfg: GeneratorConfig | None = None, device: str = "cpu", seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)  # test-only: parameter initialisation
    return Denoiser(cfg or tiny_config()).to(device).eval()


def run(model: Denoiser, batch: dict[str, torch.Tensor], x_t: torch.Tensor, step: torch.Tensor,
        shifts=None) -> torch.Tensor:  # fmt: skip
    return model(x_t, step, batch["speaker_audio"], batch["speaker_face"],
                 batch["context_valid"] > 0, batch["listener_prev"], batch["prev_valid"] > 0,
                 shifts=shifts, audio_valid=batch["audio_valid"] > 0)  # fmt: skip


def noisy_input(cfg: GeneratorConfig, b: int, seed: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(b, cfg.window, layout.DIM, generator=g).to(device)
    step = torch.randint(0, cfg.diffusion_steps, (b,), generator=g).to(device)
    return x_t, step


def random_shifts(model: Denoiser, b: int, seed: int, scale: float = 0.3, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    r = model.config.shift_rank
    return {name: LowRank(scale * torch.randn(b, out, r, generator=g).to(device),
                          scale * torch.randn(b, r, inp, generator=g).to(device))
            for name, (out, inp) in model.shift_targets().items()}  # fmt: skip


# --- config -------------------------------------------------------------------------------------


def test_config_round_trips_through_json_and_rejects_bad_values() -> None:
    cfg = GeneratorConfig(shift_layers=("cross_attn_kv", "head"), d_model=64)
    again = GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.shift_layers, tuple)
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="unknown shift_layers"):
        GeneratorConfig(shift_layers=("self_attn_q",))
    with pytest.raises(ValueError, match="divisible"):
        GeneratorConfig(d_model=30, heads=4)


# --- denoiser -----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_output_shape_and_ranges(device: str) -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg, device), make_batch(cfg, 5, 1, device)
    x_t, step = noisy_input(cfg, 5, 2, device)
    out = run(model, batch, 10 * x_t, step)
    assert out.shape == (5, cfg.window, layout.DIM)
    assert torch.isfinite(out).all()
    expr = out[..., layout.EXPRESSION]
    assert expr.min() >= 0 and expr.max() <= 1
    assert out[..., layout.POSE].min() < 0  # pose is not squashed into 0..1


@pytest.mark.parametrize("device", DEVICES)
def test_invalid_context_and_previous_frames_are_never_read(device: str) -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg, device), make_batch(cfg, 2, 1, device)
    x_t, step = noisy_input(cfg, 2, 2, device)
    for key in ("context_valid", "audio_valid"):
        batch[key][0, 3] = 0.0
    batch["prev_valid"][1, 0] = 0.0
    before = run(model, batch, x_t, step)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["speaker_audio"][0, 3] = float("nan")
    changed["speaker_face"][0, 3] = 1e6
    changed["listener_prev"][1, 0] = -1e6
    assert torch.equal(run(model, changed, x_t, step), before)
    # ... while a valid frame does matter (the check above can fail).
    changed["speaker_face"][0, 4] += 0.5
    assert not torch.allclose(run(model, changed, x_t, step)[0], before[0])


def test_audio_and_face_validity_are_separate() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 1, 1)
    x_t, step = noisy_input(cfg, 1, 2)
    batch["audio_valid"][0, -1] = 0.0  # the look-ahead row: face known, audio not yet final
    before = run(model, batch, x_t, step)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["speaker_audio"][0, -1] = 50.0
    assert torch.equal(run(model, changed, x_t, step), before)
    changed["speaker_face"][0, -1] += 0.5
    assert not torch.allclose(run(model, changed, x_t, step), before)


@pytest.mark.parametrize("device", DEVICES)
def test_all_invalid_condition_gives_finite_output(device: str) -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg, device), make_batch(cfg, 3, 1, device)
    for key in ("context_valid", "audio_valid", "prev_valid"):
        batch[key][1:] = 0.0
    x_t, step = noisy_input(cfg, 3, 2, device)
    model.train()  # attention dropout on as well
    out = run(model, batch, x_t, step)
    assert torch.isfinite(out).all()
    batch["speaker_face"][1:] = float("nan")
    assert torch.isfinite(run(model.eval(), batch, x_t, step)).all()


# --- low-rank shifts ----------------------------------------------------------------------------


def test_shifted_linear_matches_dense_weights() -> None:
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(6, 5)
    x = torch.randn(3, 4, 6, generator=g)
    shift = LowRank(torch.randn(3, 5, 2, generator=g), torch.randn(3, 2, 6, generator=g))
    expected = torch.einsum("bni,boi->bno", x, layer.weight + shift.dense()) + layer.bias
    torch.testing.assert_close(shifted_linear(x, layer, shift), expected)
    one = shift.select(slice(0, 1))  # one listener for the whole batch broadcasts
    torch.testing.assert_close(shifted_linear(x, layer, one)[2],
                               x[2] @ (layer.weight + one.dense()[0]).T + layer.bias)
    with pytest.raises(ValueError, match="maps"):
        shifted_linear(x, layer, LowRank(shift.a, torch.randn(3, 2, 7)))


@pytest.mark.parametrize("device", DEVICES)
def test_zero_shifts_are_exactly_the_shared_model(device: str) -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg, device), make_batch(cfg, 2, 1, device)
    x_t, step = noisy_input(cfg, 2, 2, device)
    shifts = random_shifts(model, 2, 3, device=device)
    zero = {k: LowRank(torch.zeros_like(s.a), s.b) for k, s in shifts.items()}
    plain = run(model, batch, x_t, step)
    assert torch.equal(run(model, batch, x_t, step, zero), plain)
    assert (run(model, batch, x_t, step, shifts) - plain).abs().max() > 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_listener_batch_equals_separate_forwards(device: str) -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg, device), make_batch(cfg, 2, 1, device)
    x_t, step = noisy_input(cfg, 2, 2, device)
    shifts = random_shifts(model, 2, 3, device=device)
    together = run(model, batch, x_t, step, shifts)
    assert not torch.allclose(together[0], together[1])
    for i in range(2):
        alone = run(model, {k: v[i: i + 1] for k, v in batch.items()}, x_t[i: i + 1],
                    step[i: i + 1], {k: s.select(slice(i, i + 1)) for k, s in shifts.items()})
        torch.testing.assert_close(together[i: i + 1], alone, atol=1e-6, rtol=0)


def test_shifted_forward_and_backward_leave_shared_weights_untouched() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 2, 1)
    x_t, step = noisy_input(cfg, 2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifts = random_shifts(model, 2, 3)
    for s in shifts.values():
        s.a.requires_grad_(True)
    run(model, batch, x_t, step, shifts).square().sum().backward()
    assert all(s.a.grad is not None and s.a.grad.abs().sum() > 0 for s in shifts.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shift_targets_name_the_real_linears_for_every_kind() -> None:
    cfg = GeneratorConfig(**{**tiny_config().to_dict(), "shift_layers": SHIFT_LAYER_KINDS})
    model = make_model(cfg)
    targets = model.shift_targets()
    assert len(targets) == cfg.layers * 6 + 1  # q, k, v, out, fc_in, fc_out per layer + head
    modules = dict(model.named_modules())
    for name, (out, inp) in targets.items():
        lin = modules[name]
        assert isinstance(lin, nn.Linear) and lin.weight.shape == (out, inp)
    assert targets["layers.1.ff.fc_in"] == (cfg.ff, cfg.d_model)
    assert targets["head"] == (layout.DIM, cfg.d_model)
    # every one of them actually changes the output
    batch, (x_t, step) = make_batch(cfg, 1, 1), noisy_input(cfg, 1, 2)
    plain = run(model, batch, x_t, step)
    for name, shift in random_shifts(model, 1, 3).items():
        assert not torch.allclose(run(model, batch, x_t, step, {name: shift}), plain), name


def test_unselected_or_unknown_shift_names_are_rejected() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 1, 1)
    x_t, step = noisy_input(cfg, 1, 2)
    assert "layers.0.ff.fc_in" not in model.shift_targets()
    for name in ("layers.0.ff.fc_in", "layers.9.cross_attn.q", "decoder.head"):
        bogus = {name: LowRank.zeros(1, 16, 16, 2)}
        with pytest.raises(ValueError, match="unknown shift layers"):
            run(model, batch, x_t, step, bogus)


# --- schedule -----------------------------------------------------------------------------------


def test_cosine_schedule_shape_and_range() -> None:
    ac = alphas_cumprod(1000)
    assert ac.dtype == torch.float64 and ac.shape == (1000,)
    assert (ac > 0).all() and (ac < 1).all() and (ac.diff() < 0).all()
    assert ac[0] > 0.9999 and ac[-1] < 1e-6
    assert abs(ac[499].item() - 0.5) < 0.02  # the cosine schedule's midpoint


def test_q_sample_statistics() -> None:
    ac = alphas_cumprod(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20_000, 2), 0.5)
    for t in (0, 300, 700, 999):
        step = torch.full((20_000,), t)
        x_t = q_sample(x0, step, torch.randn(x0.shape, generator=g), ac)
        a = ac[t].item()
        assert abs(x_t.mean().item() - math.sqrt(a) * 0.5) < 0.02
        assert abs(x_t.std().item() - math.sqrt(1 - a)) < 0.02


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_sampling_timesteps(spacing: str) -> None:
    for n in (1, 2, 3, 4, 8, 50, 1000):
        ts = sampling_timesteps(1000, n, spacing)
        assert ts.dtype == torch.long and len(ts) == n and (ts.diff() < 0).all()
        assert 0 <= ts.min() and ts.max() <= 999
    assert sampling_timesteps(1000, 4).tolist() == [999, 749, 499, 249]
    assert sampling_timesteps(1000, 4, "leading").tolist() == [750, 500, 250, 0]
    with pytest.raises(ValueError):
        sampling_timesteps(1000, 0, spacing)


# --- samplers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_ddim_with_an_oracle_returns_its_x0_exactly(spacing: str) -> None:
    ac = alphas_cumprod(1000)
    x0 = torch.rand(3, 8, 58, generator=torch.Generator().manual_seed(1))
    calls = []

    def oracle(x_t: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        calls.append(step[0].item())
        assert step.shape == (3,) and step.dtype == torch.long
        return x0

    for steps in (1, 2, 4, 7, 50):
        calls.clear()
        out = ddim_sample(oracle, x0.shape, ac, steps=steps, generator=torch.Generator(),
                          device="cpu", spacing=spacing)  # fmt: skip
        assert torch.equal(out, x0) and len(calls) == steps


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_the_bayes_denoiser_reproduces_gaussian_data(eta: float) -> None:
    # For data x0 ~ N(m, s²) the optimal x0 predictor is linear in x_t; a correct sampler with
    # many steps must return N(m, s²). A wrong coefficient in any equation shifts m or s.
    ac, m, s = alphas_cumprod(1000), 0.3, 0.8

    def bayes(x_t: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        a = ac[step].to(x_t.dtype)[:, None]
        return m + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x_t - a.sqrt() * m)

    out = ddim_sample(bayes, (20_000, 1), ac, steps=250, eta=eta, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(0), device="cpu")  # fmt: skip
    assert abs(out.mean().item() - m) < 0.03
    assert abs(out.std().item() / s - 1) < 0.04


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_is_seeded_by_the_generator_only(device: str) -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg, device), make_batch(cfg, 2, 1, device)
    memory = model.encode(batch["speaker_audio"], batch["speaker_face"],
                          batch["context_valid"] > 0, batch["listener_prev"],
                          batch["prev_valid"] > 0)  # fmt: skip
    shifts = random_shifts(model, 2, 3, device=device)

    def sample(seed: int, eta: float = 0.0) -> torch.Tensor:
        ac = alphas_cumprod(cfg.diffusion_steps)
        return ddim_sample(lambda x, t: model.decode(x, t, memory, shifts),
                           (2, cfg.window, layout.DIM), ac, steps=4, eta=eta, device=device,
                           generator=torch.Generator(device).manual_seed(seed))  # fmt: skip

    for eta in (0.0, 1.0):
        assert torch.equal(sample(7, eta), sample(7, eta))
        assert not torch.allclose(sample(7, eta), sample(8, eta))
    live = sample_windows(model, memory, shifts, generator=torch.Generator(device).manual_seed(7))
    assert torch.equal(live, sample(7))  # identity stats: the live path is 4-step DDIM
    assert live.shape == (2, cfg.window, layout.DIM)
    assert live[..., layout.EXPRESSION].min() >= 0 and live[..., layout.EXPRESSION].max() <= 1


def test_one_step_sample_is_the_x0_prediction_at_the_first_timestep() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 2, 1)
    x_T, _ = noisy_input(cfg, 2, 5)
    first = torch.full((2,), cfg.diffusion_steps - 1)
    with torch.no_grad():
        expected = run(model, batch, x_T, first)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return run(model, batch, x, t)

    ac = alphas_cumprod(cfg.diffusion_steps)
    out = few_step_sample(denoise, x_T.shape, ac, steps=1, generator=torch.Generator(),
                          device="cpu", x_T=x_T)  # fmt: skip
    assert torch.equal(out, expected)
    for bad in (0, 9):
        with pytest.raises(ValueError, match="1..8"):
            few_step_sample(denoise, x_T.shape, ac, steps=bad, generator=torch.Generator(),
                            device="cpu")  # fmt: skip


def test_live_path_runs_in_the_normalised_diffusion_space() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 2, 1)
    g = torch.Generator().manual_seed(0)
    model.set_face_stats(torch.rand(layout.DIM, generator=g), torch.rand(layout.DIM, generator=g))
    assert model.face_std.min() >= 0.05  # floored
    memory = model.encode(batch["speaker_audio"], batch["speaker_face"],
                          batch["context_valid"] > 0, batch["listener_prev"],
                          batch["prev_valid"] > 0)  # fmt: skip
    z_T, _ = noisy_input(cfg, 2, 5)
    with torch.no_grad():
        expected = model.decode(z_T, torch.full((2,), cfg.diffusion_steps - 1), memory)
    one = sample_windows(model, memory, steps=1, generator=torch.Generator(), x_T=z_T)
    torch.testing.assert_close(one, expected, atol=1e-6, rtol=0)
    four = sample_windows(model, memory, generator=torch.Generator().manual_seed(1))
    expr = four[..., layout.EXPRESSION]
    assert expr.min() > -1e-6 and expr.max() < 1 + 1e-6
    assert not torch.allclose(four, one)


# --- loss ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_loss_is_finite_masked_and_reaches_every_parameter(device: str) -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg, device).train(), make_batch(cfg, 4, 1, device)
    ac = alphas_cumprod(cfg.diffusion_steps)
    loss = diffusion_loss(model, batch, ac, torch.Generator(device).manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # padded target frames do not count, whatever they hold
    batch["target_valid"][:, -3:] = 0.0
    g = torch.Generator(device)
    masked = diffusion_loss(model, batch, ac, g.manual_seed(0))
    batch["target"][:, -3:] = float("nan")
    assert torch.equal(diffusion_loss(model, batch, ac, g.manual_seed(0)), masked)


def test_pose_and_expression_weights_apply_to_their_dims() -> None:
    cfg = tiny_config()
    batch = make_batch(cfg, 4, 1)
    ac = alphas_cumprod(cfg.diffusion_steps)
    losses = {}
    for ew, pw in ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        model = make_model(GeneratorConfig(**{**cfg.to_dict(), "expression_weight": ew,
                                              "pose_weight": pw}))  # fmt: skip
        losses[ew, pw] = diffusion_loss(model, batch, ac, torch.Generator().manual_seed(0))
    assert losses[1.0, 0.0] > 0 and losses[0.0, 1.0] > 0
    torch.testing.assert_close(losses[1.0, 1.0], losses[1.0, 0.0] + losses[0.0, 1.0])


def test_tiny_model_overfits_one_batch() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg).train(), make_batch(cfg, 8, 1)
    ac = alphas_cumprod(cfg.diffusion_steps)

    def eval_loss() -> float:
        with torch.no_grad():  # fixed steps and noise: a fair before/after comparison
            return sum(diffusion_loss(model, batch, ac, torch.Generator().manual_seed(s)).item()
                       for s in range(4)) / 4

    start = time.perf_counter()
    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        opt.zero_grad()
        diffusion_loss(model, batch, ac, g).backward()
        opt.step()
    after = eval_loss()
    assert after < before / 5, (before, after)
    assert time.perf_counter() - start < 10


def test_loss_is_measured_in_the_diffusion_space() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 4, 1)
    ac = alphas_cumprod(cfg.diffusion_steps)
    plain = diffusion_loss(model, batch, ac, torch.Generator().manual_seed(0))
    # halving every std doubles every error in z: about 4x the loss (not exactly, as x_t and
    # hence the prediction change too); a loss in raw coefficients would barely move
    model.set_face_stats(torch.zeros(layout.DIM), torch.full((layout.DIM,), 0.5), min_std=0.0)
    halved = diffusion_loss(model, batch, ac, torch.Generator().manual_seed(0))
    assert halved > 2 * plain, (plain, halved)


def test_condition_and_previous_frame_dropout() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 4, 1)
    ac = alphas_cumprod(cfg.diffusion_steps)
    g = torch.Generator()
    off = dict(batch, context_valid=torch.zeros_like(batch["context_valid"]),
               audio_valid=torch.zeros_like(batch["audio_valid"]))
    dropped = diffusion_loss(model, batch, ac, g.manual_seed(0), cond_drop=1 - 1e-12)
    torch.testing.assert_close(dropped, diffusion_loss(model, off, ac, g.manual_seed(0)))
    no_prev = dict(batch, prev_valid=torch.zeros_like(batch["prev_valid"]))
    dropped = diffusion_loss(model, batch, ac, g.manual_seed(0), prev_drop=1 - 1e-12)
    torch.testing.assert_close(dropped, diffusion_loss(model, no_prev, ac, g.manual_seed(0)))
    noisy = diffusion_loss(model, batch, ac, g.manual_seed(0), prev_noise=2.0)
    assert torch.isfinite(noisy) and noisy != diffusion_loss(model, batch, ac, g.manual_seed(0))
    for bad in ({"cond_drop": 1.0}, {"prev_drop": -0.1}, {"prev_noise": -1.0}):
        with pytest.raises(ValueError, match="cond_drop|prev"):
            diffusion_loss(model, batch, ac, g.manual_seed(0), **bad)


def test_guidance_and_full_ddim_sampling() -> None:
    cfg = tiny_config()
    model, batch = make_model(cfg), make_batch(cfg, 3, 2)
    memory = model.encode(batch["speaker_audio"], batch["speaker_face"],
                          batch["context_valid"] > 0, batch["listener_prev"],
                          batch["prev_valid"] > 0)  # fmt: skip
    off = model.encode(batch["speaker_audio"], batch["speaker_face"],
                       torch.zeros_like(batch["context_valid"]) > 0, batch["listener_prev"],
                       batch["prev_valid"] > 0)  # fmt: skip
    x_T = torch.randn(3, cfg.window, layout.DIM, generator=torch.Generator().manual_seed(0))
    g = torch.Generator()
    with torch.no_grad():
        plain = sample_windows(model, memory, generator=g, x_T=x_T)
        # guidance between a memory and itself is the plain prediction
        same = sample_windows(model, memory, generator=g, x_T=x_T, guidance=3.0, uncond=memory)
        torch.testing.assert_close(same, plain)
        guided = sample_windows(model, memory, generator=g, x_T=x_T, guidance=3.0, uncond=off)
        assert not torch.allclose(guided, plain)
        long = sample_windows(model, memory, generator=g, x_T=x_T, steps=20, full_ddim=True)
        assert long.shape == plain.shape and torch.isfinite(long).all()
    with pytest.raises(ValueError, match="unconditional"):
        sample_windows(model, memory, generator=g, guidance=2.0)
    with pytest.raises(ValueError, match="few-step"):
        sample_windows(model, memory, generator=g, steps=20)
