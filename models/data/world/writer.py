"""Build a synthetic world on disk in the REACT2024 layout (:mod:`models.data.react_layout`).

Plan first (cheap, in the calling process): sessions and their split, each person's traits, and
which script every clip renders. Then render clips, in parallel processes if asked; every clip
draws from generators keyed by (seed, session, clip), so the files are byte-identical whatever
the order or the number of workers. Finally write the index files: pairs csv, neighbour
matrices, ``traits.csv``, ``scripts.csv`` and ``rapport.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from models.data import emotion
from models.data.react_layout import (
    SPACE_RAPPORT,
    SPLITS,
    TRAIT_NAMES,
    TRAITS_FILE,
    SplitPaths,
    read_meta,
    write_meta,
)
from models.data.world.config import (
    SITE,
    SOURCE,
    WORLD_VERSION,
    ListenerStyle,
    SpeakerStyle,
    WorldConfig,
)
from models.data.world.listener import listener_audio, listener_style, react
from models.data.world.script import make_script
from models.data.world.signals import KEY_CLIP, KEY_PERSON, KEY_SPLITS, rng_for
from models.data.world.speaker import render_speaker, speaker_style
from models.face import layout

logger = logging.getLogger(__name__)

ROLES = ("speaker", "listener")
SCRIPTS_FILE = "scripts.csv"
EMOTION_FORMAT = "%.5f"
MAX_WORKERS = 8


@dataclass(frozen=True)
class Session:
    """One conversation: a listener and its speaker, both in ``split``."""

    index: int
    split: str

    @property
    def name(self) -> str:
        return f"s{self.index:03d}"

    def person(self, role: str) -> str:
        return f"{SITE}/{self.name}/{role}"

    def clip(self, role: str, number: int) -> str:
        return f"{self.person(role)}/{number}"


@dataclass(frozen=True)
class ClipJob:
    """Clip ``number`` (1-based) of ``session``, rendering script ``script_id``."""

    session: Session
    number: int
    script_id: int


def person(seed: int, session: int, role: str) -> tuple[np.ndarray, SpeakerStyle | ListenerStyle]:
    """Traits (rounded to 4 decimals, as written to ``traits.csv``) and style of one person."""
    rng = rng_for(seed, KEY_PERSON, session, ROLES.index(role))
    traits = np.round(rng.uniform(0.0, 1.0, len(TRAIT_NAMES)), 4)
    style = speaker_style(traits, rng) if role == "speaker" else listener_style(traits, rng)
    return traits, style


def split_counts(listeners: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Sessions per split; val/test get at least one each when there are 3+ listeners."""
    n_val, n_test = round(listeners * val_fraction), round(listeners * test_fraction)
    if listeners >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    while n_val + n_test >= listeners and n_val + n_test > 0:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return {"train": listeners - n_val - n_test, "val": n_val, "test": n_test}


def plan_world(config: WorldConfig) -> list[ClipJob]:
    """Every clip of the world, ordered by split, session and clip number.

    Listeners are assigned to splits by a seeded permutation. Within a split, for each clip
    number the sessions are shuffled and cut into groups of about ``script_reuse``; each group
    shares one fresh script, so a script is heard by several listeners of one split only.
    """
    counts = split_counts(config.listeners, config.val_fraction, config.test_fraction)
    order = rng_for(config.seed, KEY_SPLITS).permutation(config.listeners)
    bounds = np.cumsum([0, counts["val"], counts["test"]])
    members = {"val": order[bounds[0]:bounds[1]], "test": order[bounds[1]:bounds[2]],
               "train": order[bounds[2]:]}  # fmt: skip
    jobs: list[ClipJob] = []
    next_script = 0
    for k, split in enumerate(SPLITS):
        sessions = sorted(int(i) for i in members[split])
        script_of: dict[tuple[int, int], int] = {}
        for number in range(1, config.clips_per_listener + 1):
            if not sessions:
                break
            shuffled = rng_for(config.seed, KEY_SPLITS, k + 1, number).permutation(sessions)
            for group in np.array_split(shuffled, max(1, len(sessions) // config.script_reuse)):
                for s in group:
                    script_of[(int(s), number)] = next_script
                next_script += 1
        for s in sessions:
            for number in range(1, config.clips_per_listener + 1):
                jobs.append(ClipJob(Session(s, split), number, script_of[(s, number)]))
    return jobs


def _write_clip(paths: SplitPaths, clip: str, coeffs: np.ndarray, pcm: np.ndarray) -> None:
    """The three files of one person's clip: coefficients, emotion csv, 16 kHz PCM16 wav."""
    for path in (paths.coeffs(clip), paths.emotion(clip), paths.audio(clip)):
        path.parent.mkdir(parents=True, exist_ok=True)
    coeffs = layout.validate(coeffs, name=clip)
    np.save(paths.coeffs(clip), coeffs)
    np.savetxt(paths.emotion(clip), emotion.emotion_from_coefficients(coeffs),
               fmt=EMOTION_FORMAT, delimiter=",", header=",".join(emotion.NAMES),
               comments="")  # fmt: skip
    sf.write(paths.audio(clip), pcm, layout.SAMPLE_RATE, subtype="PCM_16")


def render_job(config: WorldConfig, job: ClipJob, out: Path) -> None:
    """Render one clip (speaker and listener) and write its six files under ``out``."""
    s = job.session
    _, speaker = person(config.seed, s.index, "speaker")
    _, listener = person(config.seed, s.index, "listener")
    script = make_script(config.seed, job.script_id, config.seconds)
    speaker_rng, listener_rng, room_rng = rng_for(config.seed, KEY_CLIP, s.index,
                                                  job.number).spawn(3)  # fmt: skip
    face, pcm, cues = render_speaker(script, speaker, config.frames, speaker_rng)
    reaction, _ = react(cues, listener, config.frames, listener_rng)
    paths = SplitPaths(out, s.split)
    _write_clip(paths, s.clip("speaker", job.number), face, pcm)
    _write_clip(paths, s.clip("listener", job.number), reaction,
                listener_audio(config.frames, room_rng))  # fmt: skip


def neighbour_matrix(script_ids: np.ndarray) -> np.ndarray:
    """``(2P, 2P)`` bool over the mirrored list: same script and same direction."""
    scripts = np.concatenate([script_ids, script_ids])
    direction = np.repeat([0, 1], len(script_ids))
    same = scripts[:, None] == scripts[None, :]
    return same & (direction[:, None] == direction[None, :])


def _write_index(config: WorldConfig, jobs: list[ClipJob], out: Path) -> dict:
    paths: dict[str, dict[str, str]] = {"pairs": {}, "neighbours": {}}
    for split in SPLITS:
        mine = [j for j in jobs if j.session.split == split]
        sp = SplitPaths(out, split)
        rows = [f"{i},{j.session.clip('speaker', j.number)},{j.session.clip('listener', j.number)}"
                for i, j in enumerate(mine)]  # fmt: skip
        sp.pairs_csv.write_text("\n".join(["index,speaker,listener", *rows]) + "\n")
        np.save(sp.neighbours, neighbour_matrix(np.array([j.script_id for j in mine], int)))
        paths["pairs"][split], paths["neighbours"][split] = str(sp.pairs_csv), str(sp.neighbours)
    scripts = ["clip,split,role,script"]
    for j in jobs:
        scripts += [f"{j.session.clip(r, j.number)},{j.session.split},{r},{j.script_id}"
                    for r in ROLES]  # fmt: skip
    (out / SCRIPTS_FILE).write_text("\n".join(scripts) + "\n")
    traits = [",".join(["person_id", *TRAIT_NAMES, "split", "role"])]
    for session in sorted({j.session for j in jobs}, key=lambda s: s.index):
        for role in ROLES:
            values, _ = person(config.seed, session.index, role)
            traits.append(",".join([session.person(role), *(f"{v:.4f}" for v in values),
                                    session.split, role]))  # fmt: skip
    (out / TRAITS_FILE).write_text("\n".join(traits) + "\n")
    write_meta(out, {"space": SPACE_RAPPORT, "source": SOURCE, "version": WORLD_VERSION,
                     "config": config.to_json(), "seed": config.seed, "fps": layout.FPS,
                     "frames": config.frames, "sample_rate": layout.SAMPLE_RATE})  # fmt: skip
    paths.update(traits=str(out / TRAITS_FILE), scripts=str(out / SCRIPTS_FILE),
                 meta=str(out / "rapport.json"))  # fmt: skip
    return paths


def _prepare(out: Path, overwrite: bool) -> None:
    """Make ``out``; refuse a non-empty folder unless ``overwrite`` and it holds a world."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(f"{out} is not empty (pass overwrite to replace a world there)")
        if read_meta(out).get("source") != SOURCE:
            raise ValueError(f"{out} is not empty and holds no synthetic world; not touching it")
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _run(config: WorldConfig, jobs: list[ClipJob], out: Path, workers: int,
         progress: bool) -> None:  # fmt: skip
    with tqdm(total=len(jobs), unit="clip", desc="world", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                render_job(config, job, out)
                bar.update()
            return
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        try:
            futures = [pool.submit(render_job, config, job, out) for job in jobs]
            for future in as_completed(futures):
                future.result()
                bar.update()
        finally:  # on an error or Ctrl-C, drop the clips not started yet
            pool.shutdown(wait=True, cancel_futures=True)


def make_world(config: WorldConfig, out: Path, *, progress: bool = True,
               workers: int | None = None, overwrite: bool = False) -> dict:  # fmt: skip
    """Generate the world ``config`` describes under ``out``; returns a summary.

    ``workers`` processes render clips (default: the CPU count, at most ``MAX_WORKERS``); the
    files do not depend on it. Workers are spawned, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard. ``overwrite`` replaces a world already in ``out``.
    The summary has the counts (sessions, pairs and scripts per split, persons, frames),
    ``elapsed_s``, ``bytes`` on disk and the ``paths`` of the index files.
    """
    start = time.perf_counter()
    out = Path(out)
    _prepare(out, overwrite)
    jobs = plan_world(config)
    workers = min(os.cpu_count() or 1, MAX_WORKERS) if workers is None else workers
    _run(config, jobs, out, min(workers, len(jobs)), progress)
    paths = _write_index(config, jobs, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {
        "root": str(out),
        "listeners": config.listeners,
        "sessions": {s: len({j.session for j in jobs if j.session.split == s}) for s in SPLITS},
        "pairs": {s: sum(j.session.split == s for j in jobs) for s in SPLITS},
        "scripts": {s: len({j.script_id for j in jobs if j.session.split == s}) for s in SPLITS},
        "persons": 2 * config.listeners,
        "frames": config.frames,
        "elapsed_s": round(time.perf_counter() - start, 2),
        "bytes": size,
        "paths": paths,
    }
    logger.info("world of %d listeners x %d clips x %.0f s written to %s in %.1f s (%.1f MB)",
                config.listeners, config.clips_per_listener, config.seconds, out,
                summary["elapsed_s"], size / 1e6)  # fmt: skip
    return summary
