"""``TextGen-IMDB-v0``: continuing IMDB reviews, one token per step, as a Gymnasium environment.

An episode continues one review: :meth:`reset` samples a prompt (the first ``k`` tokens of a cleaned IMDB
review, ``k ~ U[prompt_min_len, prompt_max_len]``), each :meth:`step` appends the action token, and the episode
terminates on EOS or after ``max_new_tokens`` new tokens. Rewards follow TRL's PPO with the KL penalty split
between env and agent (see :class:`TextGenCore`). :class:`TextGenCore` is the batched engine shared by
:class:`TextGenEnv` (one row) and :class:`envs.textgen_vector.TextGenVectorEnv` (N rows in one call), so both
give identical rewards for identical token sequences.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from envs.hub import check_sources
from envs.length import LengthSampler, action_mask, check_min_new_tokens, eos_mask_rows
from envs.lm import IncrementalLM, freeze, load_causal_lm, resolve_device
from envs.lm.kv_cache import check_autocast_dtype
from envs.prompts import DatasetArg, load_texts, tokenize_prompts
from envs.rewards import DEFAULT_REWARD_MODEL, make_reward_fn

DEFAULT_MODEL = "lvwerra/gpt2-imdb"

ModelArg = str | os.PathLike | PreTrainedModel


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def check_kl_coef(value: Any) -> float:
    """A finite float >= 0 (0 removes the KL term from the reward; the reference still runs for ``ref_logprob``)."""
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        raise ValueError(f"kl_coef must be a finite number >= 0, got {value!r}.")
    return float(value)


def _reference_model(
    model: ModelArg, tokenizer: Any, ref_model: ModelArg | None, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Frozen reference LM (default: a copy of the initial ``model``) and the tokenizer."""
    source = model if ref_model is None else ref_model
    if tokenizer is None and ref_model is not None and isinstance(model, (str, os.PathLike)):
        tokenizer = model  # the policy's tokenizer
    if isinstance(source, PreTrainedModel):
        source = copy.deepcopy(source)  # never freeze or move the caller's (trainable) model
    ref, tok = load_causal_lm(source, tokenizer, device)
    return freeze(ref), tok


class TextGenCore:
    """Batched episodes of review continuation over ``num_rows`` rows (host token buffers + reference cache).

    Reward (TRL's PPO objective, split exactly between env and agent). TRL rewards token ``a_t`` with
    ``r_t = -β·(log π_θ(a_t|s_t) - log π_ref(a_t|s_t)) + 1[t = last]·score(prompt + response)``. The env owns the
    frozen reference ``π_ref`` but not the acting policy, so it returns

        ``r_t^env = β·log π_ref(a_t|s_t) + 1[t = last]·score``

    and the agent adds ``-β·log π_θ(a_t|s_t)`` from its own sampling log-prob whenever the env has ``kl_coef``.
    ``β = kl_coef`` (default 0.2, TRL's initial value) is mutable, e.g. for an adaptive KL controller. The reference
    log-prob ``log π_ref(a_t|s_t)`` is always reported in ``info["ref_logprob"]``, also when ``kl_coef == 0``, so the
    agent's logged KL ``Σ_t (log π_θ - log π_ref)`` (and an adaptive controller's input) is exact for every β. The
    price: with ``kl_coef == 0`` the reference LM still runs one cached decoding step per env step. ``score`` is the reward function on the decoded
    prompt + response (as TRL scores query + response), special tokens (EOS) skipped.

    Length controls (:mod:`envs.length`): ``max_new_tokens`` is fixed or drawn per episode from ``(lo, hi)``,
    EOS is masked out of the allowed actions until ``min_new_tokens`` tokens were generated, and
    ``missing_eos_penalty`` is subtracted from the score of an episode that ends without EOS. Under a mask
    the policy samples from the masked distribution, so ``log π_ref`` is taken from the reference renormalised
    over the same allowed actions: the KL then measures what training changed, not what the constraint did
    (the unconstrained initial policy has KL 0 to its reference).
    """

    def __init__(
        self,
        num_rows: int,
        model: ModelArg = DEFAULT_MODEL,
        tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
        ref_model: ModelArg | None = None,
        reward_model: Any = DEFAULT_REWARD_MODEL,
        dataset: DatasetArg = None,
        text_field: str = "text",
        split: str = "train",
        max_new_tokens: int | tuple[int, int] = 16,
        min_new_tokens: int = 0,
        missing_eos_penalty: float | None = None,
        prompt_min_len: int = 2,
        prompt_max_len: int = 8,
        kl_coef: float = 0.2,
        device: str | torch.device = "auto",
        group_size: int = 1,
        autocast_dtype: str | None = None,
    ) -> None:
        self.num_rows = _check_int("num_rows", num_rows, 1)
        self.autocast_dtype = check_autocast_dtype(autocast_dtype)
        self.group_size = _check_int("group_size", group_size, 1)
        if self.num_rows % self.group_size:
            raise ValueError(
                f"num_envs={self.num_rows} is not a multiple of group_size={self.group_size}; rows come in groups "
                "of group_size that share a prompt, so choose num_envs = group_size x number of groups."
            )
        self.length_sampler = LengthSampler(max_new_tokens)  # per-episode limit, see envs.length
        self.max_new_tokens = self.length_sampler.hi  # the largest limit (sizes the observation)
        self.min_new_tokens = check_min_new_tokens(min_new_tokens, self.length_sampler)
        if missing_eos_penalty is not None and not (isinstance(missing_eos_penalty, (int, float))
                                                    and math.isfinite(missing_eos_penalty)):
            raise ValueError(f"missing_eos_penalty must be None or a finite number, got {missing_eos_penalty!r}.")
        self.missing_eos_penalty = missing_eos_penalty
        self.prompt_min_len = _check_int("prompt_min_len", prompt_min_len, 1)
        self.prompt_max_len = _check_int("prompt_max_len", prompt_max_len, self.prompt_min_len)
        self.kl_coef = kl_coef
        self.seq_len = self.prompt_max_len + self.max_new_tokens  # L
        self.device = resolve_device(device)
        check_sources(model=model, tokenizer=tokenizer, ref_model=ref_model, reward_model=reward_model,
                      dataset=dataset)  # one short error for every default that needs an unreachable hub
        self.ref_model, self.tokenizer = _reference_model(model, tokenizer, ref_model, self.device)
        self.vocab_size = int(self.ref_model.get_output_embeddings().weight.shape[0])  # V
        self._check_model()
        self.pad_token_id, self.eos_token_id = int(self.tokenizer.pad_token_id), int(self.tokenizer.eos_token_id)
        self.reward_fn = make_reward_fn(reward_model, device=self.device, batch_size=max(64, self.num_rows))
        texts = load_texts(dataset, split, text_field)
        table, lengths = tokenize_prompts(texts, self.tokenizer, self.prompt_max_len) if texts else (None, None)
        if table is None or not (lengths >= self.prompt_min_len).any():
            raise ValueError(
                f"The dataset has no review with at least prompt_min_len={self.prompt_min_len} tokens "
                f"({len(texts)} texts); pass a non-empty dataset."
            )
        keep = lengths >= self.prompt_min_len
        self.prompt_table, self.prompt_lengths = table[keep], lengths[keep]  # (M, P), (M,)
        self.observation_space = spaces.Dict(
            input_ids=spaces.Box(0, self.vocab_size - 1, (self.seq_len,), np.int64),
            attention_mask=spaces.Box(0, 1, (self.seq_len,), np.int64),
        )
        self.action_space = spaces.Discrete(self.vocab_size)
        self.ref_lm = IncrementalLM(self.ref_model, self.num_rows, max_len=self.seq_len,
                                    autocast_dtype=self.autocast_dtype)
        self.input_ids = np.full((self.num_rows, self.seq_len), self.pad_token_id, dtype=np.int64)  # (N, L) left pad
        self.lengths = np.zeros(self.num_rows, dtype=np.int64)  # real tokens per row
        self.prompt_len = np.zeros(self.num_rows, dtype=np.int64)
        self.new_tokens = np.zeros(self.num_rows, dtype=np.int64)
        self.episode_max = np.full(self.num_rows, self.max_new_tokens, dtype=np.int64)  # this episode's limit
        self._group_len: dict[int, int] = {}  # group id -> its episodes' limit (group_size > 1, sampled lengths)
        self.group_id = np.zeros(self.num_rows, dtype=np.int64)  # id of the prompt group of each row's episode
        self._episode = np.zeros(self.num_rows, dtype=np.int64)  # episodes started per row since reset
        self._group_prompts: dict[tuple[int, int], list[int]] = {}  # (group, episode) -> [pick, k, id, rows left]
        self._next_group_id = 0
        self._ref_hidden: torch.Tensor | None = None  # (N, D) reference state of each row, None = not in sync
        self._ref_behind = False  # the last step's tokens were not decoded (every row restarts next)

    def _check_model(self) -> None:
        config = self.ref_model.config
        n_ctx = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if n_ctx is not None and self.seq_len > n_ctx:
            raise ValueError(
                f"prompt_max_len + max_new_tokens = {self.seq_len} exceeds the model context ({n_ctx} positions); "
                "shorten prompts or responses."
            )
        if len(self.tokenizer) > self.vocab_size:
            raise ValueError(f"The tokenizer has {len(self.tokenizer)} tokens but the LM head only {self.vocab_size}.")
        if self.tokenizer.eos_token_id is None:
            raise ValueError("The tokenizer needs an EOS token (episodes end on it).")

    @property
    def kl_coef(self) -> float:
        return self._kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self._kl_coef = check_kl_coef(value)

    @property
    def attention_mask(self) -> np.ndarray:
        """(N, L) int64: 1 on the real (rightmost) tokens of each row."""
        return (np.arange(self.seq_len) >= self.seq_len - self.lengths[:, None]).astype(np.int64)

    def observation(self) -> dict[str, np.ndarray]:
        """Batched observation (fresh arrays): left-padded ``input_ids`` and ``attention_mask``, (N, L)."""
        return {"input_ids": self.input_ids.copy(), "attention_mask": self.attention_mask}

    def _draw_prompts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random prompts: review indices (n,) and lengths k ~ U[prompt_min_len, prompt_max_len] (n,)."""
        pick = rng.integers(len(self.prompt_table), size=n)
        k = np.minimum(rng.integers(self.prompt_min_len, self.prompt_max_len + 1, size=n), self.prompt_lengths[pick])
        return pick, k

    def _group_prompts_for(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Prompts of the next episode of ``rows``: the e-th episode of every row of a group shares one prompt.

        The prompt of (group, e) is drawn when the first row of the group starts its e-th episode and
        forgotten when the last one has; ``group_id`` gets one new id per (group, e).
        """
        pick, k = np.empty(rows.size, dtype=np.int64), np.empty(rows.size, dtype=np.int64)
        for j, r in enumerate(rows):
            key = (int(r) // self.group_size, int(self._episode[r]))
            if key not in self._group_prompts:
                p, n = self._draw_prompts(1, rng)
                self._group_prompts[key] = [int(p[0]), int(n[0]), self._next_group_id, self.group_size]
                self._next_group_id += 1
            entry = self._group_prompts[key]
            pick[j], k[j], self.group_id[r] = entry[0], entry[1], entry[2]
            entry[3] -= 1
            if entry[3] == 0:
                del self._group_prompts[key]
        return pick, k

    def _start(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """New prompts in ``rows`` (indices): a random review's first k tokens, left padded (shared by the
        rows of a group when ``group_size > 1``)."""
        if self.group_size == 1:
            pick, k = self._draw_prompts(rows.size, rng)
            self.group_id[rows] = self._next_group_id + np.arange(rows.size)
            self._next_group_id += rows.size
        else:
            pick, k = self._group_prompts_for(rows, rng)
        self._episode[rows] += 1
        self._draw_lengths(rows, rng)
        src = np.arange(self.seq_len) - (self.seq_len - k)[:, None]  # (R, L) index into the prompt
        prompts = np.take_along_axis(self.prompt_table[pick], np.clip(src, 0, self.prompt_max_len - 1), axis=1)
        self.input_ids[rows] = np.where(src >= 0, prompts, self.pad_token_id)
        self.lengths[rows] = self.prompt_len[rows] = k
        self.new_tokens[rows] = 0

    def _draw_lengths(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """This episode's ``max_new_tokens`` for ``rows`` (shared by a group's rows, like the prompt)."""
        if self.length_sampler.fixed or self.group_size == 1:
            self.episode_max[rows] = self.length_sampler.sample(rng, rows.size)
            return
        for r in rows:
            gid = int(self.group_id[r])
            if gid not in self._group_len:
                self._group_len[gid] = int(self.length_sampler.sample(rng, 1)[0])
            self.episode_max[r] = self._group_len[gid]
        live = set(self.group_id.tolist())
        self._group_len = {g: n for g, n in self._group_len.items() if g in live}

    def action_mask(self) -> np.ndarray:
        """(N, V) int8, 1 = allowed next action: EOS is masked in rows with fewer than ``min_new_tokens``."""
        return action_mask(eos_mask_rows(self.new_tokens, self.min_new_tokens), self.eos_token_id, self.vocab_size)

    def reset(self, rng: np.random.Generator) -> None:
        """Start every row with a new prompt (and prefill the reference cache)."""
        self._episode[:] = 0
        self._group_prompts.clear()
        self._start(np.arange(self.num_rows), rng)
        self._ref_hidden = self.ref_lm.step(None, None, self.input_ids, self.attention_mask)
        self._ref_behind = False

    _BUFFERS = ("input_ids", "lengths", "prompt_len", "new_tokens", "episode_max", "group_id", "_episode")

    def _buffers(self) -> dict[str, Any]:
        """Copies of everything a step changes (besides the reference cache and the rng)."""
        return {**{k: getattr(self, k).copy() for k in self._BUFFERS},
                "group_prompts": {key: list(v) for key, v in self._group_prompts.items()},
                "group_len": dict(self._group_len), "next_group_id": self._next_group_id}

    def _set_buffers(self, state: dict[str, Any]) -> None:
        for k in self._BUFFERS:
            value = np.asarray(state[k], dtype=np.int64).copy()
            if value.shape != getattr(self, k).shape:
                raise ValueError(f"saved {k} has shape {value.shape}, this env's is {getattr(self, k).shape}")
            setattr(self, k, value)
        self._group_prompts = {tuple(key): list(v) for key, v in state["group_prompts"].items()}
        self._group_len = {int(g): int(n) for g, n in state["group_len"].items()}
        self._next_group_id = int(state["next_group_id"])

    def get_state(self) -> dict[str, Any]:
        """Token buffers, prompt groups and β (copies); :meth:`set_state` rebuilds the reference cache from them."""
        return {**self._buffers(), "kl_coef": self.kl_coef}

    def set_state(self, state: dict[str, Any]) -> None:
        self._set_buffers(state)
        self.kl_coef = state["kl_coef"]
        self.rebuild_reference()

    def rebuild_reference(self) -> None:
        """Recompute the reference model's cache from the token buffers (after a restore or a failed step)."""
        self.ref_lm.reset()
        self._ref_hidden, self._ref_behind = None, False
        if (self.lengths > 0).all():
            self._ref_hidden = self.ref_lm.step(None, None, self.input_ids, self.attention_mask)

    def step(
        self, actions: np.ndarray, restart: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Append ``actions`` (N,) to the rows not in ``restart`` (N,) bool; restart the others (reward 0).

        Returns rewards (N,) float64, terminated (N,) bool and vector-style info arrays (``key`` + ``_key``).
        Exception-safe: if anything raises (e.g. the reward function), the token buffers and ``rng`` are put
        back as they were before the call (the reference cache is rebuilt), so the step can be retried.
        """
        beta, active = self.kl_coef, ~restart
        eos_blocked = active & eos_mask_rows(self.new_tokens, self.min_new_tokens)  # (N,) before this step
        if (eos_blocked & (actions == self.eos_token_id)).any():
            rows = np.flatnonzero(eos_blocked & (actions == self.eos_token_id)).tolist()
            raise ValueError(
                f"masked action in rows {rows}: EOS (id {self.eos_token_id}) is not allowed before min_new_tokens="
                f"{self.min_new_tokens} new tokens. Sample from the allowed actions, info['action_mask'] (1 = allowed)."
            )
        saved = self._buffers()
        rng_state, ref_behind, cache_touched = rng.bit_generator.state, self._ref_behind, False
        try:
            if self._ref_hidden is None:
                raise RuntimeError("step() before reset(): the reference model has no state.")
            actions_t = torch.as_tensor(actions, device=self.device)
            ref_logp = np.zeros(self.num_rows)
            if active.any():  # a reset step of every row needs no reference log-prob
                if self._ref_behind:
                    raise RuntimeError("internal: the reference state was not advanced but a row continues.")
                with torch.no_grad():
                    with self.ref_lm.autocast():
                        logits = self.ref_lm.head(self._ref_hidden).float()  # (N, V)
                    if eos_blocked.any():  # the reference under the same constraint: renormalised over allowed tokens
                        blocked_t = torch.as_tensor(eos_blocked, device=self.device)
                        logits[:, self.eos_token_id] = logits[:, self.eos_token_id].masked_fill(blocked_t, float("-inf"))
                    ref_logp_t = -F.cross_entropy(logits, actions_t, reduction="none")  # (N,) log π_ref(a|s), fused
                ref_logp = np.where(active, ref_logp_t.double().cpu().numpy(), 0.0)
            shift = np.flatnonzero(active)
            self.input_ids[shift, :-1] = self.input_ids[shift, 1:]
            self.input_ids[shift, -1] = actions[shift]
            self.lengths[shift] += 1
            self.new_tokens[shift] += 1
            if restart.any():
                self._start(np.flatnonzero(restart), rng)
            ended_eos = active & (actions == self.eos_token_id)
            terminated = ended_eos | (active & (self.new_tokens >= self.episode_max))
            every = np.ones(self.num_rows, dtype=bool)
            info = {"prompt_len": self.prompt_len.copy(), "_prompt_len": every,
                    "new_tokens": self.new_tokens.copy(), "_new_tokens": every.copy(),
                    "group_id": self.group_id.copy(), "_group_id": every.copy(),
                    "action_mask": self.action_mask(), "_action_mask": every.copy()}
            rewards = np.zeros(self.num_rows)
            rewards += beta * ref_logp
            info["ref_logprob"], info["_ref_logprob"] = ref_logp, active.copy()
            if terminated.any():  # scored before the reference cache advances: a failing reward fn changes nothing
                done = np.flatnonzero(terminated)
                texts = self.texts(done)
                scores = self.reward_fn(texts)
                rewards[done] += scores
                if self.missing_eos_penalty is not None:
                    rewards[done] -= self.missing_eos_penalty * ~ended_eos[done]
                info["score"], info["_score"] = np.zeros(self.num_rows), terminated.copy()
                info["score"][done] = scores
                info["text"], info["_text"] = np.full(self.num_rows, None, dtype=object), terminated.copy()
                info["text"][done] = texts
                prompts, responses = self.prompt_and_response(done)
                for key, values in (("prompt", prompts), ("response", responses)):
                    info[key], info[f"_{key}"] = np.full(self.num_rows, None, dtype=object), terminated.copy()
                    info[key][done] = values
            # Every row terminated: all restart on the next step, so the reference state after this step would never
            # be read; skip decoding it (the next step prefills the new prompts).
            cache_touched = True
            self._ref_behind = bool(terminated.all())
            if not self._ref_behind:
                self._ref_hidden = self.ref_lm.step(actions_t, restart, self.input_ids, self.attention_mask)
        except BaseException as err:
            self._set_buffers(saved)
            rng.bit_generator.state = rng_state
            self._ref_behind = ref_behind
            if cache_touched:
                self.rebuild_reference()
            if hasattr(err, "add_note"):
                err.add_note("(the env step was rolled back: the env is as before the step and can be stepped again)")
            raise
        return rewards, terminated, info

    def prompt_and_response(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """Decoded prompts and responses of ``rows`` (special tokens kept visible)."""
        L = self.seq_len
        prompts = [self.input_ids[r, L - self.lengths[r]: L - self.new_tokens[r]].tolist() for r in rows]
        responses = [self.input_ids[r, L - self.new_tokens[r]:].tolist() for r in rows]
        return self.tokenizer.batch_decode(prompts), self.tokenizer.batch_decode(responses)

    def texts(self, rows: np.ndarray | Sequence[int], skip_special_tokens: bool = True) -> list[str]:
        """Decoded prompt + response of ``rows``."""
        seqs = [self.input_ids[r, self.seq_len - self.lengths[r] :].tolist() for r in rows]
        return self.tokenizer.batch_decode(seqs, skip_special_tokens=skip_special_tokens)


class CoreKLCoef:
    """``kl_coef`` (β) of an env backed by a :class:`TextGenCore`, readable and settable (adaptive KL control)."""

    core: TextGenCore

    @property
    def kl_coef(self) -> float:
        return self.core.kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.core.kl_coef = value


def check_render_mode(render_mode: str | None, allowed: Sequence[str]) -> str | None:
    if render_mode is not None and render_mode not in allowed:
        raise ValueError(f"render_mode must be None or one of {list(allowed)}, got {render_mode!r}.")
    return render_mode


class TextGenEnv(CoreKLCoef, gym.Env[dict[str, np.ndarray], int]):
    """Review continuation with a sentiment reward and per-token KL shaping (see :class:`TextGenCore`).

    Observation: ``Dict(input_ids=Box(0, V-1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` with
    ``L = prompt_max_len + max_new_tokens``: the prompt and the tokens generated so far, LEFT padded with
    ``pad_token_id`` (mask 0 on padding). Action: ``Discrete(V)``, a token id (V = the LM head's size).
    Reward: ``kl_coef·log π_ref(a_t|s_t)``, plus the sentiment score on the last token; terminated on EOS or after
    ``max_new_tokens`` tokens (never truncated). Info: ``prompt_len``, ``new_tokens``, ``action_mask``,
    ``ref_logprob`` (``log π_ref(a_t|s_t)``, always, also when ``kl_coef == 0``) and, at the end, ``score``,
    ``text`` (prompt + response, special tokens skipped: what is scored), ``prompt`` and ``response`` (decoded
    separately, special tokens visible).

    Arguments: ``model`` (HF id / local dir / PreTrainedModel + ``tokenizer``; the initial policy, whose frozen
    copy is the reference unless ``ref_model`` is given; without the hub, a short
    error lists every default that cannot load and what to pass instead), ``reward_model`` (see :func:`envs.rewards.make_reward_fn`),
    ``dataset`` (IMDB .jsonl[.gz] file/dir, hub id, a ``datasets.Dataset``, or a list of texts or dicts; default:
    the local copy, else ``stanfordnlp/imdb``), ``text_field`` (the column holding the text, default ``"text"``),
    ``split``, ``max_new_tokens`` (int, or ``(lo, hi)``: each episode draws its limit
    uniformly from lo..hi, like TRL's LengthSampler), ``min_new_tokens`` (default 0), ``missing_eos_penalty``
    (default None), ``prompt_min_len``, ``prompt_max_len``, ``kl_coef``, ``device``, ``autocast_dtype`` (None
    = float32; ``"bfloat16"``/``"float16"``: the reference decodes under ``torch.autocast``, faster on GPUs and bf16
    CPUs, log-probs bf16-accurate) and ``render_mode`` (None or ``"ansi"``: the text so far). ``group_size`` is accepted and
    ignored (it only means something for the vector env).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        kwargs.pop("group_size", None)  # one row: every episode is its own group
        self.core = TextGenCore(1, **kwargs)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.tokenizer = self.core.tokenizer
        self._done = True

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observation().items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.core.reset(self.np_random)
        self._done = False
        return self._obs(), {"prompt_len": int(self.core.prompt_len[0]), "new_tokens": 0,
                             "action_mask": self.core.action_mask()[0]}

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("step() called on a finished (or never reset) episode; call reset() first.")
        a = np.asarray(action)
        if a.shape != () or a.dtype.kind not in "iu" or not 0 <= int(a) < self.core.vocab_size:
            raise ValueError(f"action must be an integer token id in [0, {self.core.vocab_size}), got {action!r}.")
        rewards, terminated, info = self.core.step(a.reshape(1).astype(np.int64), np.zeros(1, bool), self.np_random)
        self._done = bool(terminated[0])
        single = {k: (v[0].item() if isinstance(v[0], np.generic) else v[0])
                  for k, v in info.items() if not k.startswith("_") and info[f"_{k}"][0] and k != "group_id"}
        return self._obs(), float(rewards[0]), self._done, False, single

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self.core.texts([0], skip_special_tokens=False)[0]
        return None
