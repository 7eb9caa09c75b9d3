"""``TextGen-IMDB-v0``: continuing IMDB reviews, one token per step, as a Gymnasium environment.

:class:`TextGenEnv` is the single env (one row of :class:`envs.textgen_core.TextGenCore`, the batched engine it
shares with :class:`envs.textgen_vector.TextGenVectorEnv`, so both give identical rewards for identical token
sequences). Its docstring is the reference of the env: spaces, rewards (the KL contract between env and agent),
episode end, info keys and arguments.
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.text_frame import text_frame
from envs.textgen_core import TextGenCore, TextObs
from envs.textgen_face import CoreKLCoef
from envs.textgen_setup import check_render_mode


def _first_row(info: dict[str, np.ndarray]) -> dict[str, Any]:
    """Row 0 of a vector-style info dict: the keys it reports (``_key[0]``), numpy scalars as Python numbers,
    without ``group_id`` (one row: every episode is its own group)."""
    return {k: (v[0].item() if isinstance(v[0], np.generic) else v[0])
            for k, v in info.items() if not k.startswith("_") and info[f"_{k}"][0] and k != "group_id"}


class TextGenEnv(CoreKLCoef, gym.Env[TextObs, np.int64]):
    """Continue an IMDB review token by token; a reward model scores the finished text, a frozen reference LM
    shapes every token with a KL term (RLHF as in TRL's PPO, written as an ordinary RL environment).

    ## Description
    State: a prompt (the first tokens of a cleaned IMDB review) and the tokens generated so far. Action: the next
    token. An episode is one continuation: it ends on EOS or when the episode's ``max_new_tokens`` tokens were
    generated; the reward model then scores prompt + response. The policy to train is any causal LM over the
    same tokenizer; the env holds a frozen copy of the initial ``model`` as the reference ``π_ref`` and decodes it
    incrementally (KV cache), one token per step (or, with ``ref_mode="one_pass"``, scores each finished response
    in one teacher-forced pass).

    ## Action Space
    ``Discrete(V)``: a token id, ``V`` = the size of the reference LM's output layer (>= ``len(tokenizer)``).
    Python ints, numpy integers and 0-d integer arrays are accepted; anything else raises ``ValueError``.
    With ``min_new_tokens > 0``, EOS is not allowed before that many tokens were generated (``info["action_mask"]``
    is 0 there, and so is ``action_masks()``, the (V,) bool mask sb3-contrib's ``MaskablePPO`` reads); choosing it
    raises ``ValueError`` and leaves the env unchanged.

    ## Observation Space
    ``Dict(input_ids=Box(0, V - 1, (L,), int64), attention_mask=Box(0, 1, (L,), int64))`` (:class:`TextObs`), with
    ``L = prompt_max_len + max_new_tokens`` (the upper end when ``max_new_tokens`` is a range): the prompt and the
    tokens generated so far, LEFT padded with ``pad_token_id`` (``attention_mask`` 0 on the padding, 1 on the
    real tokens). Arrays are fresh on every call.

    ## Starting State
    ``reset`` draws a review uniformly among those with at least ``prompt_min_len`` tokens and a prompt length
    ``k ~ U[prompt_min_len, prompt_max_len]`` (at most the review's length): the observation holds its first
    ``k`` tokens. With ``max_new_tokens=(lo, hi)`` the episode also draws its limit uniformly from ``lo..hi``.

    ## Rewards
    TRL's PPO reward, ``r_t = score·1[t = last] − β·(log π_θ(a_t|s_t) − log π_ref(a_t|s_t))``, split between the
    env (which owns the frozen reference ``π_ref``) and the agent (which owns the acting policy ``π_θ``). This is
    the project's one definition of that KL contract:

    - β (``kl_coef``) has one owner: the agent's rollout collector (``RolloutCollector.kl_coef``, see
      :mod:`agents.rollout`). It adopts the env's ``kl_coef`` when it is built; ``collector.set_kl_coef(β)``
      writes β into the env (``env.kl_coef``) and keeps it for the collector's half. The runner passes the fixed
      ``--kl-coef`` as the env's ``kl_coef=`` argument (so the collector starts with it), and the adaptive KL
      controller's β through ``set_kl_coef`` (when the collector is built, then once per update). Used
      standalone, the env's ``kl_coef=`` argument (default 0.2) sets it; ``env.kl_coef`` can be reassigned
      (finite, >= 0).
    - What the env returns per step: reward ``β·log π_ref(a_t|s_t)`` on every generated token, plus the score on
      the last token: the reward model's score of the finished text (prompt + response, decoded with special
      tokens skipped), minus ``missing_eos_penalty`` when that is set and the episode ends without EOS.
      ``info["ref_logprob"]`` = ``log π_ref(a_t|s_t)`` on every step, for any β (including 0: the reference runs
      one cached decoding step per env step even then). ``info["score"]`` on the last step is the reward model's
      score itself (the missing-EOS penalty is in the reward only). With ``min_new_tokens``, ``log π_ref`` is
      taken from the reference renormalised over the allowed tokens (EOS masked), as the policy samples from the
      masked distribution.
    - What the collector adds (the agent's default ``kl_mode="reward"``): ``−β·log π_θ(a_t|s_t)`` from its
      sampling log-prob, on every step that took an action, so the learner's per-token reward is
      ``score·1[last] − β(log π_θ − log π_ref)`` (TRL's PPO reward). It also logs the per-episode KL
      ``Σ_t (log π_θ − log π_ref)`` from ``info["ref_logprob"]``.
    - With the agent's ``kl_mode="loss"`` the collector removes the env's ``β·log π_ref`` (the learner sees the
      score alone, including any missing-EOS penalty) and hands ``log π_ref`` and β to the agent
      (``Rollout.ref_logprobs``, ``Rollout.kl_coef``), which adds ``β·k3`` to its loss (GRPO's KL estimator,
      when β > 0).
    - ``ref_mode="one_pass"`` (``runners.train`` uses it; the default stays ``"per_step"``): the reference does
      not decode beside the policy. When an episode ends, the env scores its whole response in ONE
      teacher-forced reference pass (batched over the rows that end together) and pays the KL part with the
      last step: that step's reward is ``score (− penalty) + β·Σ_t log π_ref(a_t|s_t)``, every other step's is 0,
      so an episode's return equals the per-step mode's. ``info["ref_logprob"]`` is then not reported;
      instead the last step reports ``info["ref_logprobs"]``, the (n,) float64 array of ``log π_ref(a_t|s_t)``
      of its n tokens in order (the same numbers as the per-step mode's, up to float rounding, ~1e-6).
      ``env.running_ref_logprobs()`` gives the same for the episodes still running (one pass over them; the
      vector env: an (N,) object array, empty where no episode runs). The collector places these back on
      their tokens with its current β (its rollout's tokens get that rollout's β, as in the per-step mode),
      removing the env's ``β·Σ`` from the last step: the learner's per-token reward is the per-step mode's
      (to float rounding), for both ``kl_mode``s.
    - An agent that is not this project's (SB3, a custom loop) gets only the env's half: ``β·log π_ref(a_t|s_t)``
      per token plus the score. Nothing subtracts ``β·log π_θ``, so it does not optimise TRL's objective: add
      ``−β·log π_θ(a_t|s_t)`` to the reward yourself, or set ``kl_coef=0`` (reward = the score alone) and build
      the KL term from ``info["ref_logprob"]``.

    ## Episode End
    - Termination: the action is an EOS id (any of ``eos_token_ids``), or the episode's ``max_new_tokens``-th
      token was generated.
    - Truncation: never (``truncated`` is always False; the registration adds no ``TimeLimit``).
    Stepping a finished (or never reset) episode raises ``RuntimeError``.

    ## Information
    ``reset`` returns ``prompt_len`` (int, prompt tokens), ``new_tokens`` (int, 0) and ``action_mask``
    ((V,) int8, 1 = allowed next action). ``step`` returns those three (``new_tokens``: tokens generated so far,
    ``action_mask``: for the next action) and ``ref_logprob`` (float, ``log π_ref(a_t|s_t)``) on every step
    (``ref_mode="per_step"``), and on the last step of an episode also ``score`` (float, the reward model's
    score), ``text`` (str, prompt + response with special tokens skipped: what is scored), ``prompt`` and
    ``response`` (str, decoded separately, special tokens visible) and, with ``ref_mode="one_pass"``,
    ``ref_logprobs`` (see Rewards). The vector env reports the same keys as arrays over its N rows (``key`` +
    ``_key`` masks), plus ``group_id``.

    ## Arguments
    ```python
    gym.make("TextGen-IMDB-v0", render_mode=None, model="lvwerra/gpt2-imdb", tokenizer=None, ref_model=None,
             reward_model="lvwerra/distilbert-imdb", dataset=None, text_field="text", split="train",
             max_new_tokens=16, min_new_tokens=0, missing_eos_penalty=None, prompt_min_len=2, prompt_max_len=8,
             kl_coef=0.2, device="auto", group_size=1, autocast_dtype=None, ref_mode="per_step",
             eos_token_ids=None, reward_tokenizer=None, ref_dtype=None, reward_dtype=None, add_bos=None,
             ref_device=None, reward_device=None)
    ```
    - ``render_mode``: None, ``"ansi"`` (the text so far, special tokens visible) or ``"rgb_array"`` (that text
      drawn as a (240, 640, 3) uint8 image, :func:`envs.text_frame.text_frame`; needs Pillow).
    - ``model``: the initial policy, an HF id, a local directory or a ``PreTrainedModel`` (then with
      ``tokenizer``); its frozen copy is the reference unless ``ref_model`` is given. Without the hub, one short
      error lists every default that cannot load and what to pass instead.
    - ``tokenizer``: HF id, directory or tokenizer object (default: the model's own).
    - ``ref_model``: a different reference LM (same forms as ``model``).
    - ``reward_model``: a sequence classifier (id, directory, object with ``reward_tokenizer``, or a
      ``(model, tokenizer)`` pair), ``"vader"`` or a callable ``list[str] -> scores`` (see
      :func:`envs.rewards.make_reward_fn`). ``reward_tokenizer``: the classifier object's own tokenizer.
    - ``ref_dtype``, ``reward_dtype``: None or ``"float32"``/``"bfloat16"``/``"float16"``, the dtype the weights
      of the reference and of the reward model are held in (a path loads in it, default float32; the
      reference copied from a model object is converted; a reward model object must already be in it).
    - ``dataset``: IMDB .jsonl[.gz] file or directory, hub id, a ``datasets.Dataset``, or a list of texts or
      dicts (default: the local copy, else ``stanfordnlp/imdb``); ``text_field``: the column holding the text;
      ``split``: the split to read.
    - ``max_new_tokens``: an int, or ``(lo, hi)``: each episode draws its limit uniformly from ``lo..hi`` (like
      TRL's LengthSampler). ``min_new_tokens``: EOS is masked before that many tokens (0 to ``lo``).
      ``missing_eos_penalty``: None or a number subtracted from the score of an episode that ends without EOS.
    - ``prompt_min_len``, ``prompt_max_len``: the range of prompt lengths in tokens (BOS included).
    - ``add_bos``: None (the tokenizer's default: BOS first where encoding adds it, e.g. Llama, Gemma, Mistral,
      Phi-3, OPT; never twice), True or False.
    - ``kl_coef``: β >= 0 (see Rewards).
    - ``device``: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:N]"``; ``autocast_dtype``: None (float32)
      or ``"bfloat16"``/``"float16"``: the reference (either ``ref_mode``) and the reward model run under
      ``torch.autocast`` (faster on GPUs and bf16 CPUs; log-probs and scores then bf16/fp16-accurate). Opt-in
      only: no hardware switches it on, so the same command gives the same numbers on any machine.
    - ``ref_device``, ``reward_device``: where the reference and the reward model run (None: ``device``; same
      forms), e.g. a second GPU for a big model's reference; only token ids, log-probs and scores cross devices
      (a PeftModel policy's reference is the policy itself: it stays on ``device``).
    - ``ref_mode``: ``"per_step"`` (the reference decodes one cached step per env step; reward ``β·log π_ref``
      per token) or ``"one_pass"`` (one teacher-forced pass per finished response; the KL part on the last step),
      see Rewards. Both modes are deterministic; they agree to float rounding.
    - ``eos_token_ids``: the ids that end an episode (and that ``min_new_tokens`` masks); default: every EOS
      id of the model's ``generation_config`` plus the tokenizer's EOS (what ``generate()`` stops on), as
      ``env.eos_token_ids``.
    - ``temperature``: the temperature > 0 the policy samples at (default 1; the agent's
      ``AgentConfig.temperature``): ``log π_ref`` is taken from the reference's logits divided by it, as TRL does,
      so the KL compares both distributions at the same temperature.
    - ``group_size``: accepted and ignored here (prompt groups only mean something for the vector env).

    ## Version History
    - v0: Initial version.
    """

    core_class: type[TextGenCore] = TextGenCore  # the engine (TextGen-v0: its general subclass)
    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        kwargs.pop("group_size", None)  # one row: every episode is its own group
        self.core = self.core_class(1, **kwargs)
        # gymnasium types Dict as Space[dict[str, Space]]; its elements are dicts of arrays, here TextObs
        self.observation_space = cast("spaces.Space[TextObs]", self.core.observation_space)
        self.action_space = self.core.action_space
        self.tokenizer = self.core.tokenizer
        self.eos_token_ids = self.core.eos_token_ids  # (E,) every id that ends an episode
        self._done = True

    def _obs(self) -> TextObs:
        obs = self.core.observation()  # (1, L) each
        return {"input_ids": obs["input_ids"][0], "attention_mask": obs["attention_mask"][0]}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[TextObs, dict[str, Any]]:
        super().reset(seed=seed)
        self.core.reset(self.np_random)
        self._done = False
        return self._obs(), _first_row(self.core.row_info())

    def step(self, action: int | np.integer[Any] | np.ndarray) -> tuple[TextObs, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called on a finished (or never reset) episode; call reset() first.")
        a = np.asarray(action)
        if a.shape != () or a.dtype.kind not in "iu" or not 0 <= int(a) < self.core.vocab_size:
            raise ValueError(f"action must be an integer token id in [0, {self.core.vocab_size}), got {action!r}.")
        rewards, terminated, info = self.core.step(a.reshape(1).astype(np.int64), np.zeros(1, bool), self.np_random)
        self._done = bool(terminated[0])
        return self._obs(), float(rewards[0]), self._done, False, _first_row(info)

    def running_ref_logprobs(self) -> np.ndarray:
        """``log π_ref`` (float64, one per token) of the response generated so far when the episode is still
        running, else an empty array: one teacher-forced pass (the one-pass mode's collector calls it)."""
        if self._done:
            return np.zeros(0)
        return self.core.response_ref_logprobs([0])[0]

    def action_masks(self) -> np.ndarray:
        """(V,) bool, True = allowed next action (``info["action_mask"]``; what ``MaskablePPO`` asks for)."""
        return self.core.action_mask()[0].astype(bool)

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            return None
        text = self.core.texts([0], skip_special_tokens=False)[0]
        return text if self.render_mode == "ansi" else text_frame(text)
