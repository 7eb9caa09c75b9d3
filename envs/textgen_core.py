"""The batched engine of ``TextGen-IMDB-v0``: :class:`TextGenCore` runs ``N`` review continuations at once.

It holds the host token buffers (left-padded, one row per episode), the frozen reference LM with its KV cache
(:class:`envs.lm.IncrementalLM`), the reward function and the prompt table. :class:`envs.textgen.TextGenEnv`
(one row) and :class:`envs.textgen_vector.TextGenVectorEnv` (N rows) are thin Gymnasium faces over it, so both
give identical rewards for identical token sequences. The reward and its KL contract are documented once, in
:class:`envs.textgen.TextGenEnv` (section Rewards).

Also here: :class:`TextObs` (the observation dict), :meth:`TextGenCore.row_info` (the one builder of the per-row
info both envs report). ``env.kl_coef`` of both envs is :class:`envs.textgen_face.CoreKLCoef`. The rows' token
buffers and episode starts are in :mod:`envs.textgen_rows` (a mixin of the core), argument checks and loading
in :mod:`envs.textgen_setup`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from transformers import PreTrainedTokenizerBase

from envs.hub import check_sources
from envs.length import LengthSampler, action_mask, check_min_new_tokens, eos_mask_rows
from envs.lm import IncrementalLM
from envs.lm.kv_cache import check_autocast_dtype
from envs.lm.loading import unwrap
from envs.lm.scoring import response_logprobs
from envs.partial_restart import restart_core_rows
from envs.prompts import DatasetArg, load_texts
from envs.rewards import DEFAULT_REWARD_MODEL, make_reward_fn
from envs.textgen_rows import TextRows
from envs.textgen_setup import (
    DEFAULT_MODEL,
    ModelArg,
    check_int,
    check_kl_coef,
    check_missing_eos_penalty,
    check_model,
    check_ref_mode,
    check_temperature,
    episode_eos_ids,
    model_devices,
    prompt_table,
    reference_model,
)

__all__ = ["TextGenCore", "TextObs"]


class TextObs(TypedDict):
    """Observation of ``TextGen-IMDB-v0``: the prompt and the tokens generated so far, LEFT padded.

    Shapes: ``(L,)`` from :class:`envs.textgen.TextGenEnv`, ``(N, L)`` from the vector env and
    :meth:`TextGenCore.observation`, with ``L = prompt_max_len + max_new_tokens`` (the largest limit).
    """

    input_ids: np.ndarray  # int64 token ids, ``pad_token_id`` on the padding
    attention_mask: np.ndarray  # int64, 1 on the real (rightmost) tokens, 0 on the padding


class TextGenCore(TextRows):
    """Batched episodes of review continuation over ``num_rows`` rows (host token buffers + reference cache).

    Per step, row ``n`` appends its action and gets ``β·log π_ref(a_t|s_t)``, plus the score when its episode
    ends (the full contract: :class:`envs.textgen.TextGenEnv`, section Rewards). ``β = kl_coef`` is mutable;
    ``info["ref_logprob"]`` is reported for every β, so the reference LM runs one cached decoding step per env
    step even when ``kl_coef == 0``. Length controls (:mod:`envs.length`): ``max_new_tokens`` is fixed or drawn
    per episode from ``(lo, hi)``, EOS is masked out of the allowed actions until ``min_new_tokens`` tokens were
    generated, and ``missing_eos_penalty`` is subtracted from the score of an episode that ends without EOS.
    Under a mask the policy samples from the masked distribution, so ``log π_ref`` is taken from the reference
    renormalised over the same allowed actions: the KL then measures what training changed, not what the
    constraint did (the unconstrained initial policy has KL 0 to its reference).
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
        ref_mode: str = "per_step",
        eos_token_ids: Sequence[int] | None = None,
        reward_tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
        ref_dtype: str | None = None,
        reward_dtype: str | None = None,
        add_bos: bool | None = None,
        temperature: float = 1.0,
        ref_device: str | torch.device | None = None, reward_device: str | torch.device | None = None,
    ) -> None:
        self._check_rows(num_rows, group_size, autocast_dtype)
        self.ref_mode = check_ref_mode(ref_mode)
        self.temperature = check_temperature(temperature)
        self._check_lengths(max_new_tokens, min_new_tokens, missing_eos_penalty, prompt_min_len, prompt_max_len)
        self.kl_coef = kl_coef
        self.device, self.ref_device, self.reward_device = model_devices(device, ref_device, reward_device, model)
        check_sources(model=model, tokenizer=tokenizer, ref_model=ref_model, reward_model=reward_model,
                      dataset=dataset)  # one short error for every default that needs an unreachable hub
        self._load_models(model, tokenizer, ref_model, reward_model,
                          {"reward_tokenizer": reward_tokenizer, "ref_dtype": ref_dtype, "reward_dtype": reward_dtype})
        self.eos_token_ids = episode_eos_ids(unwrap(self.ref_model), self.tokenizer, eos_token_ids)  # (E,)
        self._eos_t = torch.as_tensor(self.eos_token_ids, device=self.ref_device)  # (E,)
        self._load_prompts(dataset, split, text_field, add_bos)  # may set prompt_max_len (whole prompts: longest)
        self.seq_len = self.prompt_max_len + self.max_new_tokens  # L
        check_model(unwrap(self.ref_model), self.tokenizer, self.seq_len, self.vocab_size)
        self.observation_space = spaces.Dict(
            input_ids=spaces.Box(0, self.vocab_size - 1, (self.seq_len,), np.int64),
            attention_mask=spaces.Box(0, 1, (self.seq_len,), np.int64),
        )
        self.action_space = spaces.Discrete(self.vocab_size)
        self.ref_lm = IncrementalLM(self.ref_model, self.num_rows, max_len=self.seq_len,
                                    autocast_dtype=self.autocast_dtype, reference=True)  # a PeftModel: adapter off
        self._allocate_buffers()
        self._ref_hidden: torch.Tensor | None = None  # (N, D) reference state of each row, None = not in sync
        self._ref_behind = False  # the last step's tokens were not decoded (every row restarts next)
        self._passes = {"reference_teacher_forced": 0, "reward": 0}  # forward passes besides the decoder's

    def _check_rows(self, num_rows: int, group_size: int, autocast_dtype: str | None) -> None:
        """Row count, prompt-group size (a divisor of it) and the reference's autocast dtype."""
        self.num_rows = check_int("num_rows", num_rows, 1)
        self.autocast_dtype = check_autocast_dtype(autocast_dtype)
        self.group_size = check_int("group_size", group_size, 1)
        if self.num_rows % self.group_size:
            raise ValueError(
                f"num_envs={self.num_rows} is not a multiple of group_size={self.group_size}; rows come in groups "
                "of group_size that share a prompt, so choose num_envs = group_size x number of groups."
            )

    def _check_lengths(
        self, max_new_tokens: int | tuple[int, int], min_new_tokens: int, missing_eos_penalty: float | None,
        prompt_min_len: int, prompt_max_len: int,
    ) -> None:
        """Response-length controls (see :mod:`envs.length`) and the prompt-length range."""
        self.length_sampler = LengthSampler(max_new_tokens)  # per-episode limit, see envs.length
        self.max_new_tokens = self.length_sampler.hi  # the largest limit (sizes the observation)
        self.min_new_tokens = check_min_new_tokens(min_new_tokens, self.length_sampler)
        self.missing_eos_penalty = check_missing_eos_penalty(missing_eos_penalty)
        self.prompt_min_len = check_int("prompt_min_len", prompt_min_len, 1)
        self.prompt_max_len = check_int("prompt_max_len", prompt_max_len, self.prompt_min_len)

    def _load_models(
        self, model: ModelArg, tokenizer: Any, ref_model: ModelArg | None, reward_model: Any, opts: dict[str, Any]
    ) -> None:
        """The frozen reference LM, its tokenizer and the reward function (``opts``: the reward model's tokenizer,
        the reference's and the reward model's dtypes)."""
        self.ref_model, self.tokenizer = reference_model(model, tokenizer, ref_model, self.ref_device,
                                                         opts["ref_dtype"])
        self.vocab_size = int(unwrap(self.ref_model).get_output_embeddings().weight.shape[0])  # V
        self.pad_token_id, self.eos_token_id = int(self.tokenizer.pad_token_id), int(self.tokenizer.eos_token_id)
        self._load_reward(reward_model, opts)

    def _load_reward(self, reward_model: Any, opts: dict[str, Any]) -> None:
        """The checked reward function ``list[str] -> scores`` (see :func:`envs.rewards.make_reward_fn`)."""
        self.reward_fn = make_reward_fn(reward_model, device=self.reward_device, batch_size=max(64, self.num_rows),
                                        tokenizer=opts["reward_tokenizer"], dtype=opts["reward_dtype"])

    def _load_prompts(self, dataset: DatasetArg, split: str, text_field: str, add_bos: bool | None) -> None:
        """The prompt table (M, P) and the prompt lengths (M,): the first tokens of every usable review, BOS first
        where the tokenizer adds one (``add_bos``; a subclass with other prompts overrides this, see
        :mod:`envs.textgen_general`)."""
        texts = load_texts(dataset, split, text_field)
        self.prompt_table, self.prompt_lengths = prompt_table(texts, self.tokenizer, self.prompt_min_len,
                                                              self.prompt_max_len, add_bos)  # (M, P), (M,)

    def _scores(self, done: np.ndarray, texts: list[str], info: dict[str, np.ndarray]) -> np.ndarray:
        """The reward model's scores (D,) of the finished rows ``done`` (D,) whose decoded ``texts`` are given
        (a subclass may add its own info keys)."""
        return self.reward_fn(texts)

    @property
    def kl_coef(self) -> float:
        return self._kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self._kl_coef = check_kl_coef(value)

    def observation(self) -> TextObs:
        """Batched observation (fresh arrays): left-padded ``input_ids`` and ``attention_mask``, (N, L)."""
        return {"input_ids": self.input_ids.copy(), "attention_mask": self.attention_mask}

    def row_info(self) -> dict[str, np.ndarray]:
        """The info every row reports at reset and at every step, in the vector convention (``key`` (N, ...) +
        ``_key`` (N,) bool): ``prompt_len`` (N,), ``new_tokens`` (N,), ``group_id`` (N,) and ``action_mask`` (N, V)."""
        every = np.ones(self.num_rows, dtype=bool)
        return {"prompt_len": self.prompt_len.copy(), "_prompt_len": every,
                "new_tokens": self.new_tokens.copy(), "_new_tokens": every.copy(),
                "group_id": self.group_id.copy(), "_group_id": every.copy(),
                "action_mask": self.action_mask(), "_action_mask": every.copy()}

    def action_mask(self) -> np.ndarray:
        """(N, V) int8, 1 = allowed next action: EOS is masked in rows with fewer than ``min_new_tokens``."""
        return action_mask(eos_mask_rows(self.new_tokens, self.min_new_tokens), self.eos_token_ids, self.vocab_size)

    def reset(self, rng: np.random.Generator) -> None:
        """Start every row with a new prompt (and prefill the reference cache)."""
        self._episode[:] = 0
        self._group_prompts.clear()
        self._start(np.arange(self.num_rows), rng)
        self._ref_hidden, self._ref_behind = None, False
        if self.ref_mode == "per_step":
            self._ref_hidden = self.ref_lm.step(None, None, self.input_ids, self.attention_mask)

    def restart_rows(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """New episodes in ``rows`` now, the others keep theirs (:func:`envs.partial_restart.restart_core_rows`)."""
        restart_core_rows(self, rows, rng)

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
        if self.ref_mode == "per_step" and (self.lengths > 0).all():
            self._ref_hidden = self.ref_lm.step(None, None, self.input_ids, self.attention_mask)

    def step(
        self, actions: np.ndarray, restart: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Append ``actions`` (N,) to the rows not in ``restart`` (N,) bool; restart the others (reward 0).

        Returns rewards (N,) float64, terminated (N,) bool and vector-style info arrays (``key`` + ``_key``).
        Exception-safe: if anything raises (e.g. the reward function), the token buffers and ``rng`` are put
        back as they were before the call (the reference cache is rebuilt), so the step can be retried.
        """
        beta, active, per_step = self.kl_coef, ~restart, self.ref_mode == "per_step"
        eos_blocked = self._check_actions(actions, active)  # (N,) rows where EOS was not allowed
        saved = self._buffers()
        rng_state, ref_behind, cache_touched = rng.bit_generator.state, self._ref_behind, False
        try:
            actions_t = torch.as_tensor(actions, device=self.ref_device)  # (N,) for the reference
            ref_logp = self._reference_logprobs(actions_t, active, eos_blocked) if per_step else None  # (N,) f64
            terminated, ended_eos = self._advance_rows(actions, active, restart, rng)  # (N,), (N,) bool
            info = self.row_info()
            rewards = np.zeros(self.num_rows)
            if ref_logp is not None:
                rewards += beta * ref_logp
                info["ref_logprob"], info["_ref_logprob"] = ref_logp, active.copy()
            if terminated.any():  # scored before the reference cache advances: a failing reward fn changes nothing
                self._score_finished(terminated, ended_eos, rewards, info)
                if not per_step:
                    self._pay_episode_kl(terminated, beta, rewards, info)
            cache_touched = True
            if per_step:
                self._advance_reference(actions_t, restart, terminated)
        except BaseException as err:
            self._roll_back(saved, rng, rng_state, ref_behind, cache_touched, err)
            raise
        return rewards, terminated, info

    def _pay_episode_kl(self, terminated: np.ndarray, beta: float, rewards: np.ndarray,
                        info: dict[str, np.ndarray]) -> None:
        """One-pass mode: add ``β·Σ_t log π_ref(a_t|s_t)`` of each finished episode to its last reward (in
        place) and report the per-token log-probs as ``info["ref_logprobs"]`` (an (n,) float64 array per row)."""
        done = np.flatnonzero(terminated)
        per_row = self.response_ref_logprobs(done)
        rewards[done] += beta * np.array([lp.sum() for lp in per_row])
        info["ref_logprobs"], info["_ref_logprobs"] = np.full(self.num_rows, None, dtype=object), terminated.copy()
        for r, lp in zip(done, per_row):
            info["ref_logprobs"][r] = lp

    def response_ref_logprobs(self, rows: np.ndarray | Sequence[int]) -> list[np.ndarray]:
        """``log π_ref(a_t|s_t)`` (float64, one per generated token, in order) of the current response of each of
        ``rows``, from ONE batched teacher-forced pass of the reference (no pass when no row has a token yet);
        renormalised without EOS where ``min_new_tokens`` masked it, as in the per-step mode."""
        rows = np.asarray(rows, dtype=np.int64)
        out = [np.zeros(0) for _ in rows]
        scored = np.flatnonzero(self.new_tokens[rows] > 0)
        if scored.size:
            r = rows[scored]
            lp = response_logprobs(self.ref_lm, self.input_ids[r], self.lengths[r], self.new_tokens[r],
                                   self.eos_token_ids, self.min_new_tokens, self.temperature)  # (R, K)
            self._passes["reference_teacher_forced"] += 1
            lp_np, K = lp.double().cpu().numpy(), lp.shape[1]
            for j, i in enumerate(scored):
                out[i] = lp_np[j, K - int(self.new_tokens[r[j]]):]
        return out

    def pass_counts(self) -> dict[str, int]:
        """Forward passes since the env was built: the reference's cached decoding steps and prefills (per-step
        mode) and teacher-forced passes (one-pass mode), and the reward model's batched calls."""
        return {"reference_decode": self.ref_lm.passes["decode"], "reference_prefill": self.ref_lm.passes["prefill"],
                **self._passes}

    def _check_actions(self, actions: np.ndarray, active: np.ndarray) -> np.ndarray:
        """(N,) bool: the active rows where EOS is masked; raises if one of them chose EOS."""
        eos_blocked = active & eos_mask_rows(self.new_tokens, self.min_new_tokens)  # (N,) before this step
        chose_eos = eos_blocked & np.isin(actions, self.eos_token_ids)
        if chose_eos.any():
            rows = np.flatnonzero(chose_eos).tolist()
            raise ValueError(
                f"masked action in rows {rows}: EOS (ids {self.eos_token_ids.tolist()}) is not allowed before "
                f"min_new_tokens="
                f"{self.min_new_tokens} new tokens. Sample from the allowed actions, info['action_mask'] (1 = allowed)."
            )
        return eos_blocked

    def _reference_logprobs(self, actions_t: torch.Tensor, active: np.ndarray, eos_blocked: np.ndarray) -> np.ndarray:
        """(N,) float64 log π_ref(a_t|s_t) of the active rows (0 on restarting rows), from the per-step reference
        state (N, D); renormalised over the allowed tokens in the ``eos_blocked`` rows."""
        hidden = self._ref_hidden
        if hidden is None:
            raise RuntimeError("step() before reset(): the reference model has no state.")
        ref_logp = np.zeros(self.num_rows)
        if not active.any():  # a reset step of every row needs no reference log-prob
            return ref_logp
        if self._ref_behind:
            raise RuntimeError("internal: the reference state was not advanced but a row continues.")
        with torch.no_grad():
            with self.ref_lm.autocast():
                logits = self.ref_lm.head(hidden).float()  # (N, V)
            if self.temperature != 1.0:  # the reference at the policy's sampling temperature (as TRL)
                logits = logits / self.temperature
            if eos_blocked.any():  # the reference under the same constraint: renormalised over allowed tokens
                blocked_t = torch.as_tensor(eos_blocked, device=self.ref_device)[:, None]  # (N, 1)
                logits[:, self._eos_t] = logits[:, self._eos_t].masked_fill(blocked_t, float("-inf"))
            ref_logp_t = -F.cross_entropy(logits, actions_t, reduction="none")  # (N,) log π_ref(a|s), fused
        return np.where(active, ref_logp_t.double().cpu().numpy(), 0.0)

    def _score_finished(
        self, terminated: np.ndarray, ended_eos: np.ndarray, rewards: np.ndarray, info: dict[str, np.ndarray]
    ) -> None:
        """Score the ``terminated`` rows: add the score (minus the missing-EOS penalty) to their ``rewards`` (N,)
        in place, and their ``score``, ``text``, ``prompt`` and ``response`` to ``info``."""
        done = np.flatnonzero(terminated)
        texts = self.texts(done)
        dtype = self.autocast_dtype  # the reward model under the reference's autocast (None: float32)
        with torch.autocast(self.reward_device.type, dtype=dtype, enabled=dtype is not None):
            scores = self._scores(done, texts, info)
        self._passes["reward"] += 1
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

    def _advance_reference(self, actions_t: torch.Tensor, restart: np.ndarray, terminated: np.ndarray) -> None:
        """Decode this step's tokens (and prefill the restarted rows) in the reference cache."""
        # Every row terminated: all restart on the next step, so the reference state after this step would never
        # be read; skip decoding it (the next step prefills the new prompts).
        self._ref_behind = bool(terminated.all())
        if not self._ref_behind:
            self._ref_hidden = self.ref_lm.step(actions_t, restart, self.input_ids, self.attention_mask)

    def _roll_back(
        self, saved: dict[str, Any], rng: np.random.Generator, rng_state: Mapping[str, Any], ref_behind: bool,
        cache_touched: bool, err: BaseException,
    ) -> None:
        """Put the buffers, ``rng`` and (when it was touched) the reference cache back as before a failed step."""
        self._set_buffers(saved)
        rng.bit_generator.state = rng_state
        self._ref_behind = ref_behind
        if cache_touched:
            self.rebuild_reference()
        if hasattr(err, "add_note"):
            err.add_note("(the env step was rolled back: the env is as before the step and can be stepped again)")

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

