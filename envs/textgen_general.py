"""``TextGen-v0``: your own prompts and rewards. Whole prompts from a dataset column (or chat messages through the
tokenizer's chat template), reward functions that see the prompt, the completion and the row's other columns.

:class:`GeneralTextGenCore` is :class:`envs.textgen_core.TextGenCore` with another prompt table
(:mod:`envs.prompt_rows`) and a :class:`envs.rewards.RewardSet` as the reward; :class:`TextGenGeneralEnv` (one row)
and :class:`TextGenGeneralVectorEnv` (the native vector env) are the faces of ``TextGen-IMDB-v0`` over it, so the
vectorisation, prompt groups, length controls, KL shaping, state save/restore and export are the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.lm.loading import unwrap
from envs.prompt_rows import load_rows, render_prompts, whole_prompt_table
from envs.prompts import DatasetArg, adds_bos
from envs.rewards import RewardSet
from envs.textgen import TextGenEnv
from envs.textgen_core import TextGenCore
from envs.textgen_setup import check_int, model_context
from envs.textgen_vector import TextGenVectorEnv

_IMDB_ONLY = {"prompt_min_len": "max_prompt_len", "prompt_max_len": "max_prompt_len", "text_field": "prompt_field",
              "split": "dataset"}


class GeneralTextGenCore(TextGenCore):
    """The batched engine of ``TextGen-v0`` (arguments: :class:`TextGenGeneralEnv`)."""

    _BUFFERS = (*TextGenCore._BUFFERS, "prompt_row")  # the dataset row of each row's prompt, saved and restored

    def __init__(
        self, num_rows: int, *, prompt_field: str = "prompt", chat_template: bool = False,
        max_prompt_len: int | None = None, reward_weights: list[float] | None = None, reward_model: Any = None,
        **kwargs: Any,
    ) -> None:
        for name, instead in _IMDB_ONLY.items():
            if name in kwargs:
                raise TypeError(f"TextGen-v0 takes whole prompts: {name}= is TextGen-IMDB-v0's; use {instead}=.")
        if reward_model is None:
            raise ValueError("TextGen-v0 needs reward_model=: a callable fn(prompts, completions, **columns) -> "
                             "scores or list[str] -> scores, a classifier, 'vader', or a list of them.")
        self.prompt_field, self.chat_template = str(prompt_field), bool(chat_template)
        self.max_prompt_len = None if max_prompt_len is None else check_int("max_prompt_len", max_prompt_len, 1)
        self._reward_weights = reward_weights
        super().__init__(num_rows, reward_model=reward_model, prompt_min_len=1, prompt_max_len=1, **kwargs)

    def _load_reward(self, reward_model: Any, opts: dict[str, Any]) -> None:
        self.reward_set = RewardSet(reward_model, self._reward_weights, device=self.reward_device,
                                    batch_size=max(64, self.num_rows), tokenizer=opts["reward_tokenizer"],
                                    dtype=opts["reward_dtype"])

    def _load_prompts(self, dataset: DatasetArg, split: str, text_field: str, add_bos: bool | None) -> None:
        """Every row's whole prompt: the table (M, P), the lengths (M,), the rows kept and their columns; BOS
        first where the tokenizer adds one (``add_bos``), never twice."""
        rows = load_rows(dataset, self.prompt_field)
        texts = render_prompts(rows, self.prompt_field, self.tokenizer, self.chat_template)
        n_ctx = model_context(unwrap(self.ref_model))
        room = None if n_ctx is None else n_ctx - self.max_new_tokens
        self.prompt_table, self.prompt_lengths, kept = whole_prompt_table(texts, self.tokenizer, self.max_prompt_len,
                                                                          room,
                                                                          adds_bos(self.tokenizer, add_bos))
        self.prompt_max_len = int(self.prompt_table.shape[1])
        self.prompt_min_len = int(self.prompt_lengths.min())
        self.rows = [rows[i] for i in kept]
        self.prompt_texts = [texts[i] for i in kept]
        self.num_dropped_prompts = len(rows) - len(kept)
        shared = set.intersection(*(set(r) for r in self.rows)) - {self.prompt_field}
        self.columns = sorted(shared)

    def _draw_prompts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random rows (n,) and their whole prompts' lengths (n,)."""
        pick = rng.integers(len(self.prompt_table), size=n)
        return pick, self.prompt_lengths[pick].copy()

    def completions(self, rows: np.ndarray) -> list[str]:
        """The decoded responses of ``rows`` (special tokens skipped, as the reward functions get them)."""
        seqs = [self.input_ids[r, self.seq_len - self.new_tokens[r]:].tolist() for r in rows]
        return self.tokenizer.batch_decode(seqs, skip_special_tokens=True)

    def _scores(self, done: np.ndarray, texts: list[str], info: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted total of the reward functions; each one's scores in ``info["reward/<name>"]`` (reported
        on the rows it applies to)."""
        picks = self.prompt_row[done]
        prompts = [self.rows[i][self.prompt_field] for i in picks]
        columns = {c: [self.rows[i][c] for i in picks] for c in self.columns}
        total, parts = self.reward_set(prompts, self.completions(done), texts, columns)
        for name, values in parts.items():
            key = f"reward/{name}"
            info[key], info[f"_{key}"] = np.full(self.num_rows, np.nan), np.zeros(self.num_rows, bool)
            info[key][done], info[f"_{key}"][done] = values, ~np.isnan(values)
        return total


class TextGenGeneralEnv(TextGenEnv):
    """Generate a completion of a prompt of your dataset token by token; your reward functions score it, a frozen
    reference LM shapes every token with a KL term. ``TextGen-IMDB-v0`` with your prompts and rewards.

    ## Description
    As :class:`envs.textgen.TextGenEnv` (its docstring is the reference for the KL contract, the length controls
    and the info keys), except that the prompt is a whole dataset row's prompt and the score comes from the
    reward functions of ``reward_model`` (:class:`envs.rewards.RewardSet`).

    ## Action Space
    ``Discrete(V)``: a token id, as ``TextGen-IMDB-v0``.

    ## Observation Space
    ``Dict(input_ids=Box(0, V - 1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))``, LEFT padded, with
    ``L = P + max_new_tokens`` and ``P`` the longest kept prompt in tokens.

    ## Starting State
    ``reset`` draws a dataset row uniformly (among the kept ones) and the observation holds its whole prompt: the
    ``prompt_field`` string, or its chat messages rendered with the tokenizer's chat template and
    ``add_generation_prompt=True`` (tokenized without adding special tokens: the template writes them).

    ## Rewards
    As ``TextGen-IMDB-v0``: ``β·log π_ref(a_t|s_t)`` on every token, plus on the last token the score: the
    weighted sum ``Σ_i w_i·score_i`` of the reward functions (a function returning None for a completion does not
    apply to it and adds nothing; at least one must apply), minus ``missing_eos_penalty`` if set and no EOS.

    ## Episode End
    EOS or the episode's ``max_new_tokens`` tokens, as ``TextGen-IMDB-v0`` (never truncated).

    ## Information
    The keys of ``TextGen-IMDB-v0`` (``prompt_len``, ``new_tokens``, ``group_id``, ``action_mask``,
    ``ref_logprob``; on the last step ``score``, ``text``, ``prompt``, ``response``), plus on the last step
    ``reward/<name>`` for every reward function that applies (its unweighted score; the runner logs its mean to
    TensorBoard as ``rewards/<name>``).

    ## Arguments
    - ``dataset``: a list of dicts (or of strings), a ``datasets.Dataset``, or a ``.jsonl[.gz]`` file of objects.
    - ``prompt_field``: the column holding the prompt (default ``"prompt"``): a string or a list of chat messages.
    - ``chat_template``: also render string prompts as one user message through the chat template.
    - ``max_prompt_len``: None (every prompt) or a cap in tokens: longer prompts are dropped
      (``env.core.num_dropped_prompts``). A kept prompt that does not fit the model context beside
      ``max_new_tokens`` raises ``ValueError`` saying which cap would fit.
    - ``reward_model``: a reward function or a list of them. Each is a callable ``fn(prompts, completions,
      **columns) -> scores`` (two or more positional parameters: the prompts as the dataset holds them, the
      decoded completions, and the row's other columns as keyword lists, all with ``**kwargs``, else those it
      names), a callable ``list[str] -> scores`` of the finished texts (prompt + completion), a classifier or
      ``"vader"``. ``reward_weights``: one weight per function (default 1 each).
    - Everything else as ``TextGen-IMDB-v0`` (``model``, ``tokenizer``, ``ref_model``, ``max_new_tokens``,
      ``min_new_tokens``, ``missing_eos_penalty``, ``kl_coef``, ``temperature``, ``device``, ``ref_device``,
      ``reward_device``, ``autocast_dtype``, ``group_size``); its ``prompt_min_len``, ``prompt_max_len``,
      ``text_field`` and ``split`` are rejected.

    ## Version History
    - v0: Initial version.
    """

    core_class = GeneralTextGenCore


class TextGenGeneralVectorEnv(TextGenVectorEnv):
    """``num_envs`` rows of :class:`TextGenGeneralEnv`, stepped in one batched call (autoreset ``NEXT_STEP``,
    prompt groups of ``group_size`` rows sharing a prompt, as :class:`envs.textgen_vector.TextGenVectorEnv`)."""

    core_class = GeneralTextGenCore
