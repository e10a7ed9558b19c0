"""The synthetic dyadic world: the files it writes and the behaviour they hold.

A tiny world (6 listeners × 3 clips × 8 s) is written once; behavioural statistics that need more
listeners than that are measured on speakers and listeners simulated directly with the models.
"""

from __future__ import annotations

import csv
import filecmp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.stats import spearmanr

from models.data import emotion
from models.data.react_layout import SPLITS, TRAIT_NAMES, SplitPaths, person_id, read_meta
from models.data.world import LISTENER_TRAIT_MAP, SPEAKER_TRAIT_MAP, WorldConfig, make_world
from models.data.world.listener import (
    REACTION_DELAY_S,
    listener_style,
    plan_reactions,
    react,
    render_listener,
)
from models.data.world.script import make_script
from models.data.world.speaker import SpeakerCues, render_speaker, speaker_style
from models.face import layout
from models.features.mfcc import mfcc_features

TINY = WorldConfig(listeners=6, clips_per_listener=3, seconds=8.0, seed=3)
SILENT_C0 = -4.0
"""MFCC c0 (log energy) between room noise (about -7.5) and speech (about 0)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    summary = make_world(TINY, root, progress=False, workers=1)
    assert summary["pairs"]["train"] + summary["pairs"]["val"] + summary["pairs"]["test"] == 18
    return root


def pairs(root: Path, split: str) -> list[tuple[str, str]]:
    with SplitPaths(root, split).pairs_csv.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "speaker", "listener"]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
    return [(r[1], r[2]) for r in rows[1:]]


def scripts_of(root: Path) -> dict[str, int]:
    with (root / "scripts.csv").open() as f:
        return {row["clip"]: int(row["script"]) for row in csv.DictReader(f)}


def c0(pcm: np.ndarray) -> np.ndarray:
    """Per-frame log energy: MFCC c0 averaged over the frame's two sub-frames."""
    return mfcc_features(pcm)[:, [0, 13]].mean(axis=1)


def pause_onsets(pcm: np.ndarray, min_frames: int = 6) -> np.ndarray:
    """Frames where the speaker falls silent for at least ``min_frames`` frames."""
    silent = np.concatenate([[False], c0(pcm) < SILENT_C0, [False]])
    starts = np.flatnonzero(silent[1:] & ~silent[:-1])
    stops = np.flatnonzero(~silent[1:] & silent[:-1])
    keep = (stops - starts >= min_frames) & (starts > 0)
    return starts[keep]


def nod_onsets(coeffs: np.ndarray, speed: float = 0.004, rise: float = 0.02) -> np.ndarray:
    """Frames where the head starts pitching forward (faster than ``speed`` rad/frame) and then
    goes on to pitch at least ``rise`` rad further within 240 ms: the start of a nod."""
    pitch = coeffs[:, layout.index("pitch")]
    fast = np.diff(pitch) > speed
    starts = np.flatnonzero(fast[1:] & ~fast[:-1]) + 1
    later = pitch[np.minimum(starts + 6, len(pitch) - 1)]
    return starts[later - pitch[starts] > rise] + 1


def f0_autocorrelation(pcm: np.ndarray, start: float, stop: float) -> float:
    """Median pitch (Hz) of the clearly voiced 40 ms windows in [start, stop) s; nan if none."""
    sr, win = layout.SAMPLE_RATE, 640
    lags = np.arange(sr // 400, sr // 60)  # 60..400 Hz
    found = []
    for a in range(int(start * sr), int(stop * sr) - win, win // 2):
        x = pcm[a:a + win].astype(float)
        x = x - x.mean()
        if np.sqrt(np.mean(x * x)) < 0.02:
            continue
        ac = np.array([np.dot(x[:-k], x[k:]) for k in lags]) / np.dot(x, x)
        if ac.max() > 0.5:
            found.append(sr / lags[np.argmax(ac)])
    return float(np.median(found)) if found else float("nan")


# --- layout -------------------------------------------------------------------------------------


def test_layout_is_complete_and_readable(world: Path) -> None:
    meta = read_meta(world)
    assert meta["space"] == "rapport58" and meta["source"] == "synthetic-world"
    assert meta["seed"] == TINY.seed and meta["config"]["listeners"] == TINY.listeners
    frames = TINY.frames
    for split in SPLITS:
        paths = SplitPaths(world, split)
        for speaker, listener in pairs(world, split):
            for clip in (speaker, listener):
                coeffs = np.load(paths.coeffs(clip))
                assert coeffs.shape == (frames, layout.DIM) and coeffs.dtype == np.float32
                layout.validate(coeffs, name=clip)
                assert np.abs(coeffs[:, layout.ROTATION]).max() < 0.6
                assert np.abs(coeffs[:, layout.TRANSLATION]).max() < 0.5
                with paths.emotion(clip).open() as f:
                    assert next(csv.reader(f)) == list(emotion.NAMES)
                emo = np.loadtxt(paths.emotion(clip), delimiter=",", skiprows=1)
                np.testing.assert_allclose(emo, emotion.emotion_from_coefficients(coeffs),
                                           atol=1e-5)  # fmt: skip
                info = sf.info(paths.audio(clip))
                assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
                assert info.frames == frames * layout.SAMPLES_PER_FRAME
            room, _ = sf.read(paths.audio(listener), dtype="int16")
            assert 0 < np.sqrt(np.mean(room.astype(float) ** 2)) < 100  # quiet, not zeros
            assert person_id(speaker).endswith("/speaker")
            assert person_id(listener) == person_id(speaker).replace("/speaker", "/listener")


def test_traits_table_covers_every_person(world: Path) -> None:
    with (world / "traits.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["person_id", *TRAIT_NAMES, "split", "role"]
    people = {r["person_id"]: r for r in rows}
    for split in SPLITS:
        for speaker, listener in pairs(world, split):
            for clip, role in ((speaker, "speaker"), (listener, "listener")):
                row = people[person_id(clip)]
                assert (row["split"], row["role"]) == (split, role)
                assert all(0.0 <= float(row[t]) <= 1.0 for t in TRAIT_NAMES)
    assert len(people) == 2 * TINY.listeners


def test_listener_splits_are_disjoint_and_scripts_stay_in_their_split(world: Path) -> None:
    scripts = scripts_of(world)
    persons, used = {}, {}
    for split in SPLITS:
        clips = [c for pair in pairs(world, split) for c in pair]
        persons[split] = {person_id(c) for c in clips}
        used[split] = {scripts[c] for c in clips}
    assert all(persons[s] for s in SPLITS)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not persons[a] & persons[b] and not used[a] & used[b]


def test_neighbour_matrices_follow_shared_scripts(world: Path) -> None:
    scripts = scripts_of(world)
    for split in SPLITS:
        listed = pairs(world, split)
        n = len(listed)
        matrix = np.load(SplitPaths(world, split).neighbours)
        assert matrix.shape == (2 * n, 2 * n) and matrix.dtype == bool
        ids = np.array([scripts[s] for s, _ in listed] * 2)
        direction = np.repeat([0, 1], n)
        expected = (ids[:, None] == ids[None, :]) & (direction[:, None] == direction[None, :])
        np.testing.assert_array_equal(matrix, expected)
        assert matrix.diagonal().all()
    train = np.load(SplitPaths(world, "train").neighbours)
    assert train.sum() > train.shape[0]  # several appropriate reactions per speaker clip


def test_same_config_and_seed_give_identical_files(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_world(TINY, again, progress=False, workers=2)  # order and processes must not matter
    mine = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    assert mine == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(world, again, [str(p) for p in mine], shallow=False)
    assert not mismatch and not errors

    other = tmp_path / "other"
    make_world(WorldConfig(**{**TINY.to_json(), "seed": TINY.seed + 1}), other, progress=False)
    theirs = {p.relative_to(other) for p in other.rglob("*.npy") if "3D_FV" in str(p)}
    common = [p for p in mine if p in theirs]
    assert common
    assert not any(filecmp.cmp(world / p, other / p, shallow=False) for p in common)
    assert not filecmp.cmp(world / "traits.csv", other / "traits.csv", shallow=False)


def test_make_world_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_world(TINY, tmp_path, progress=False)
    with pytest.raises(ValueError, match="no synthetic world"):
        make_world(TINY, tmp_path, progress=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="listeners"):
        WorldConfig(listeners=0)
    with pytest.raises(ValueError, match="seconds"):
        WorldConfig(seconds=1.0)


# --- audio and speaker --------------------------------------------------------------------------


def test_speech_energy_follows_turns_and_pitch_falls_at_phrase_ends(world: Path) -> None:
    scripts = scripts_of(world)
    t = np.arange(TINY.frames) / layout.FPS
    talking_c0, pause_c0, drops = [], [], {True: [], False: []}
    for split in SPLITS:
        for speaker, listener in pairs(world, split):
            pcm, _ = sf.read(SplitPaths(world, split).audio(speaker), dtype="int16")
            script = make_script(TINY.seed, scripts[speaker], TINY.seconds)
            energy, talking = c0(pcm), script.talking(t)
            talking_c0.append(energy[talking].mean())
            pause_c0.append(energy[~talking].mean())
            room, _ = sf.read(SplitPaths(world, split).audio(listener), dtype="int16")
            assert c0(room).max() < SILENT_C0
            x = pcm / 32768.0
            for p in script.phrases:
                body = f0_autocorrelation(x, p.start + 0.2, p.end - 0.6)
                final = f0_autocorrelation(x, p.end - 0.3, p.end - 0.02)
                if np.isfinite(body) and np.isfinite(final) and p.end - p.start > 1.2:
                    drops[p.falls].append(12 * np.log2(final / body))
    assert np.mean(talking_c0) > np.mean(pause_c0) + 5.0
    assert min(talking_c0) > max(pause_c0)
    assert len(drops[True]) >= 8 and len(drops[False]) >= 4
    assert np.median(drops[True]) < -2.5  # semitones: the low-pitch phrase ending
    assert np.median(drops[True]) < np.median(drops[False]) - 2.0


def test_jaw_moves_with_the_audio(world: Path) -> None:
    speaker = pairs(world, "train")[0][0]
    paths = SplitPaths(world, "train")
    pcm, _ = sf.read(paths.audio(speaker), dtype="int16")
    jaw = np.load(paths.coeffs(speaker))[:, layout.index("jawOpen")]
    energy = c0(pcm)

    def corr(lag: int) -> float:
        a, b = (jaw[lag:], energy[:len(energy) - lag]) if lag >= 0 else (jaw[:lag], energy[-lag:])
        return float(np.corrcoef(a, b)[0, 1])

    assert corr(0) > 0.6
    assert corr(0) > max(corr(-4), corr(4)) + 0.1


def test_a_script_keeps_its_turns_whoever_says_it() -> None:
    script = make_script(7, 11, 20.0)
    frames = int(20.0 * layout.FPS) + 1
    onsets = []
    for k in range(2):
        style = speaker_style(np.random.default_rng(k).uniform(size=5), np.random.default_rng(k))
        _, pcm, _ = render_speaker(script, style, frames, np.random.default_rng(10 + k))
        onsets.append(pause_onsets(pcm))
    ends = np.round(np.array([p.end for p in script.phrases]) * layout.FPS)
    for found in onsets:
        assert len(found) == len(ends) - (ends[-1] >= frames - 6)
        assert np.abs(found - ends[:len(found)]).max() <= 3


# --- listeners ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heard() -> list[SpeakerCues]:
    """Cues and audio pause onsets of four 20 s scripts, each rendered by its own speaker."""
    frames = int(20.0 * layout.FPS) + 1
    out = []
    for k in range(4):
        style = speaker_style(np.full(5, 0.5), np.random.default_rng(50 + k))
        _, pcm, cues = render_speaker(make_script(1, k, 20.0), style, frames,
                                      np.random.default_rng(60 + k))  # fmt: skip
        out.append((cues, pause_onsets(pcm)))
    return out


def simulate(heard, traits: np.ndarray, seed: int) -> list[tuple[np.ndarray, list]]:
    rng = np.random.default_rng(seed)
    style = listener_style(traits, rng)
    return [react(cues, style, len(cues.smile), rng) for cues, _ in heard]


def test_reactions_follow_speaker_pauses_after_a_human_delay(heard) -> None:
    rng = np.random.default_rng(0)
    lags = []
    for i in range(30):
        for (face, reactions), (_, pauses) in zip(simulate(heard, rng.uniform(size=5), i), heard,
                                                  strict=True):  # fmt: skip
            low, high = REACTION_DELAY_S
            assert all(low - 1e-9 <= r.onset - r.cause <= high + 1e-9 for r in reactions)
            nods = nod_onsets(face)
            lags += [d for p in pauses for d in nods - p if -50 <= d <= 50]
    counts = np.bincount(np.asarray(lags) + 50, minlength=101)
    smoothed = np.convolve(counts, np.ones(3) / 3, mode="same")
    peak_ms = (int(np.argmax(smoothed)) - 50) * 1000 // layout.FPS
    assert 200 <= peak_ms <= 700
    assert smoothed.max() > 3 * np.median(smoothed)


def test_reactions_are_causal(heard) -> None:
    cues, _ = heard[0]
    style = listener_style(np.full(5, 0.7), np.random.default_rng(3))
    cut = 8.0
    k = int(cut * layout.FPS)
    changed = SpeakerCues(cues.ends[cues.ends < cut], cues.invitation[cues.ends < cut],
                          np.concatenate([cues.smile[:k], np.ones(len(cues.smile) - k)]),
                          np.concatenate([cues.brow[:k], np.zeros(len(cues.brow) - k)]))
    faces = []
    for c in (cues, changed):
        rng = np.random.default_rng(9)
        plan_rng, face_rng = rng.spawn(2)
        faces.append(render_listener(c, plan_reactions(c, style, plan_rng), style,
                                     len(c.smile), face_rng))  # fmt: skip
    safe = k + int(REACTION_DELAY_S[0] * layout.FPS)
    np.testing.assert_array_equal(faces[0][:safe], faces[1][:safe])
    assert not np.array_equal(faces[0], faces[1])


def test_trait_map_is_monotone_in_its_trait() -> None:
    rng = np.random.default_rng(0)
    for name, link in LISTENER_TRAIT_MAP.items():
        base = rng.uniform(size=5)
        values = []
        for level in (0.0, 0.5, 1.0):
            traits = base.copy()
            traits[TRAIT_NAMES.index(link.trait)] = level
            values.append(getattr(listener_style(traits, np.random.default_rng(1)), name))
        step = np.sign(link.high - link.low)
        assert step * (values[1] - values[0]) > 0 and step * (values[2] - values[1]) > 0, name
        assert values[0] == pytest.approx(link.low) and values[2] == pytest.approx(link.high)


def test_traits_show_in_behaviour(heard) -> None:
    rng = np.random.default_rng(1)
    traits = rng.uniform(size=(30, 5))
    smile, blinks, nods, spread = [], [], [], []
    minutes = len(heard) * len(heard[0][0].smile) / layout.FPS / 60
    for i, tr in enumerate(traits):
        runs = simulate(heard, tr, 100 + i)
        faces = np.concatenate([f for f, _ in runs])
        smile.append(faces[:, layout.index("mouthSmileLeft"):layout.index("mouthSmileRight") + 1]
                     .mean())  # fmt: skip
        closed = faces[:, layout.index("eyeBlinkLeft")] > 0.5
        blinks.append(np.sum(closed[1:] & ~closed[:-1]) / minutes)
        reactions = [r for _, rs in runs for r in rs]
        nods.append(sum(r.kind == "nod" for r in reactions))
        spread.append(np.std([r.onset - r.cause for r in reactions]))
    column = {name: traits[:, TRAIT_NAMES.index(name)] for name in TRAIT_NAMES}
    assert spearmanr(smile, column["extraversion"])[0] > 0.5
    assert spearmanr(blinks, column["neuroticism"])[0] > 0.5
    assert spearmanr(nods, column["agreeableness"])[0] > 0.3
    assert spearmanr(spread, column["conscientiousness"])[0] < -0.5


def style_statistics(face: np.ndarray) -> np.ndarray:
    """Per-clip summary a personalisation model could pick up from a few seconds."""
    pick = [layout.index(n) for n in ("mouthSmileLeft", "mouthSmileRight", "browDownLeft",
                                      "browInnerUp", "mouthPressLeft", "eyeLookOutLeft",
                                      "eyeLookInLeft", "eyeLookDownLeft", "eyeLookUpLeft")]
    return np.concatenate([face[:, layout.POSE].mean(0), face[:, pick].mean(0)])  # fmt: skip


def identification_accuracy(stats: np.ndarray, owner: np.ndarray) -> float:
    z = (stats - stats.mean(0)) / (stats.std(0) + 1e-9)
    dist = np.linalg.norm(z[:, None] - z[None, :], axis=-1)
    np.fill_diagonal(dist, np.inf)
    return float(np.mean(owner[np.argmin(dist, axis=1)] == owner))


def test_a_listener_is_recognisable_across_its_clips(world: Path, heard) -> None:
    stats, owner = [], []
    for split in SPLITS:
        for _, listener in pairs(world, split):
            stats.append(style_statistics(np.load(SplitPaths(world, split).coeffs(listener))))
            owner.append(person_id(listener))
    assert identification_accuracy(np.array(stats), np.array(owner)) > 0.8  # chance: 2/17
    # Beyond the five traits: listeners with identical traits still differ by signature.
    stats, owner = [], []
    for i in range(10):
        for face, _ in simulate(heard, np.full(5, 0.5), 200 + i):
            stats.append(style_statistics(face[: 10 * layout.FPS]))  # 10 s of it
            owner.append(i)
    assert identification_accuracy(np.array(stats), np.array(owner)) > 0.7  # chance: 3/39


def test_same_script_admits_different_reactions(world: Path) -> None:
    scripts = scripts_of(world)
    paths = SplitPaths(world, "train")
    by_script: dict[int, list[np.ndarray]] = {}
    for speaker, listener in pairs(world, "train"):
        by_script.setdefault(scripts[speaker], []).append(np.load(paths.coeffs(listener)))
    shared = [faces for faces in by_script.values() if len(faces) >= 2]
    assert shared
    for faces in shared:
        for a in range(len(faces)):
            for b in range(a + 1, len(faces)):
                diff = np.abs(faces[a][:, layout.EXPRESSION] - faces[b][:, layout.EXPRESSION])
                assert diff.mean() > 0.005
                assert np.abs(faces[a][:, layout.POSE] - faces[b][:, layout.POSE]).mean() > 0.01


def test_docs_tables_match_the_trait_maps() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "world.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`"):
            rows.setdefault(cells[0].strip("`"), []).append(cells[1:5])
    for table, trait_map in ((0, SPEAKER_TRAIT_MAP), (-1, LISTENER_TRAIT_MAP)):
        for name, link in trait_map.items():
            trait, direction, low, high = rows[name][table]
            assert (trait, float(low), float(high)) == (link.trait, link.low, link.high), name
            assert direction == ("rises" if link.high > link.low else "falls"), name
