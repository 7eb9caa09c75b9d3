"""Helpers of the env tests (imported by them, not collected): a cheap reward, the reference log-probs by
teacher forcing, the real tokens of a text observation, and CatGrid's greedy path."""

from __future__ import annotations

import numpy as np
import torch

from envs.catgrid import CatGridEnv


def letter_score(texts: list[str]) -> list[float]:
    """A cheap deterministic reward: share of the letter 'e' (scaled)."""
    return [10.0 * t.count("e") / max(len(t), 1) for t in texts]


@torch.no_grad()
def ref_logprobs(model, prompt: list[int], actions: list[int]) -> np.ndarray:
    """log π_ref(a_t | prompt, a_<t) by one teacher-forced forward, (T,)."""
    seq = torch.tensor([prompt + actions])
    logp = model(seq).logits[0].double().log_softmax(-1)  # (len, V)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(actions) - 1)
    return logp[pos, torch.tensor(actions)].numpy()


def real_tokens(obs: dict, row: int | None = None) -> list[int]:
    ids, mask = (obs["input_ids"], obs["attention_mask"]) if row is None else (
        obs["input_ids"][row], obs["attention_mask"][row])
    return ids[mask.astype(bool)].tolist()


def greedy_path(env: CatGridEnv, policy: np.ndarray, max_len: int = 200) -> list[int]:
    """States visited when the greedy policy's moves always succeed (no slip)."""
    t, s, path = env.tables, env.tables.start, [env.tables.start]
    while not t.done[s] and len(path) < max_len:
        s = int(t.succ[s, policy[s]])
        path.append(s)
    return path
