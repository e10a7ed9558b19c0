"""A torch ``Dataset`` of online training windows over a :class:`ReactDataset`."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from models.data.dataset import ReactDataset
from models.data.windows import CONTEXT, PREVIOUS, WINDOW

FIELDS = ("speaker_audio", "audio_valid", "speaker_face", "context_valid", "listener_prev",
          "prev_valid", "target", "target_valid")  # fmt: skip
"""The float32 tensors of an item; masks are 1.0 / 0.0. ``index`` and ``t`` are int64."""


class WindowDataset(Dataset):
    """Item ``k`` is the ``k``-th ``(sample, t)`` of ``dataset.iter_windows`` as a dict of
    tensors (shapes as :class:`~models.data.windows.OnlineWindow`: C, Pv, W frames).

    ``history`` extra frames lengthen the speaker context and the listener's previous frames
    (both still end at ``t``: ``C + history`` and ``Pv + history`` rows), for a recipe that
    replays the windows before ``t`` (:mod:`models.generator.rollout`).
    """

    def __init__(self, dataset: ReactDataset, *, w: int = WINDOW, stride: int | None = None,
                 context: int = CONTEXT, prev: int = PREVIOUS,
                 history: int = 0) -> None:  # fmt: skip
        if history < 0:
            raise ValueError(f"history must be non-negative, got {history}")
        self.dataset = dataset
        self.w, self.context, self.prev = w, context + history, prev + history
        self.starts = list(dataset.iter_windows(w=w, stride=stride))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, t = self.starts[k]
        win = self.dataset.window(i, t, w=self.w, context=self.context, prev=self.prev)
        item = {name: torch.from_numpy(getattr(win, name)).to(torch.float32) for name in FIELDS}
        item["index"] = torch.tensor(win.index, dtype=torch.int64)
        item["t"] = torch.tensor(win.t, dtype=torch.int64)
        return item
