"""Shared policy/value transformers: one causal trunk, a policy head and a value head.

Every network the agent trains implements the same two calls, so the algorithm code never
asks which environment it is solving:

- ``act(obs, episode_start) -> (logits (N, A), values (N,))`` for one vector-env step. It may
  keep state between calls (the LM keeps a KV cache); ``episode_start`` (N,) tells it which
  rows begin a new episode.
- ``evaluate(batch: StepBatch) -> (logits (B, A), values (B,))`` for the update, with
  gradients. Steps arrive grouped in *chunks*: consecutive steps of one episode in one env
  column. A network whose observation is the whole history (the LM) evaluates each chunk in
  one teacher-forced forward pass; a Markov one (the grid) evaluates each step on its own.

``GridTransformer`` reads a ``MultiDiscrete``/``Discrete`` observation as a short token
sequence (one token per component, e.g. an x token and a y token) through a small GPT-2
trunk. ``CausalLMPolicy`` plugs a pretrained causal LM: its trunk, its LM head as the policy
head and a new linear value head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from transformers import GPT2Config, GPT2Model, PretrainedConfig, PreTrainedModel

from envs.lm import IncrementalLM, forward_left_padded
from envs.lm.kv_cache import check_autocast_dtype, fuse_gelu
from envs.lm.loading import is_peft, unwrap
from envs.lm.logits import LogitsHead, check_logits_path
from envs.textgen_core import TextObs

EnvObs: TypeAlias = "np.ndarray | TextObs"
"""One vector-env observation batch as the env returns it: a (N, ...) array (CatGrid) or the text env's dict."""
Obs: TypeAlias = "Tensor | dict[str, Tensor]"
"""The same on the agent's device: a (N, ...) tensor, or a dict of them for Dict observation spaces."""
M = TypeVar("M", bound=nn.Module)


@dataclass
class StepBatch:
    """A minibatch of ``B`` steps grouped into ``C`` chunks (see the module docstring).

    Attributes:
        obs: observations (B, ...) (dict of tensors for Dict spaces), on the device; None when only the
            chunks' last observations are stored (``last_obs``, a network with ``history_observation``).
        actions: (B,) long.
        chunk: (B,) long, chunk index of each step in ``[0, C)``.
        steps_to_end: (B,) long, how many steps of its chunk follow the step.
        chunk_last: (C,) long, batch index of each chunk's last step.
        last_obs: the observation at each chunk's last step (C, ...), or None (then read from ``obs``).
    """

    obs: Obs | None
    actions: Tensor
    chunk: Tensor
    steps_to_end: Tensor
    chunk_last: Tensor
    last_obs: Obs | None = None

    def chunk_obs(self) -> Obs:
        """(C, ...) the observation at each chunk's last step (what a history network evaluates)."""
        if self.last_obs is not None:
            return self.last_obs
        assert self.obs is not None, "a StepBatch holds obs or last_obs"
        if isinstance(self.obs, dict):
            return {k: v[self.chunk_last] for k, v in self.obs.items()}
        return self.obs[self.chunk_last]


def obs_to_tensor(obs: EnvObs | Obs, device: torch.device) -> Obs:
    """numpy (or dict of numpy) observation → tensor(s) on ``device`` (int64 stays int64)."""
    if isinstance(obs, dict):
        return {k: torch.as_tensor(np.asarray(v), device=device) for k, v in obs.items()}
    return torch.as_tensor(np.asarray(obs), device=device)


def disable_dropout(module: M) -> M:
    """Set every dropout probability in ``module`` to 0, in place; returns ``module``.

    PPO's ratio ``exp(log π_θ - log π_old)`` is only 1 at ``θ = θ_old`` when the update
    evaluates the same function the rollout sampled from, so every network the agent samples
    from or trains has no dropout (as in the PPO-for-LM literature). Zeroed: the ``p`` of every
    ``nn.Dropout*`` module, float attributes of modules whose name contains ``drop`` (some
    attention implementations keep e.g. ``attention_dropout`` as a float), and the same fields
    of every Hugging Face config (``attn_pdrop``, ``resid_pdrop``, ``embd_pdrop``,
    ``attention_dropout``, ``hidden_dropout_prob``, ``layerdrop``, ...), which some attention
    kernels read directly. Supervised stages (SFT, reward model) keep their dropout: they train
    their own copy of the model.
    """
    configs: list[Any] = []
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.p = 0.0
        for name, value in list(vars(m).items()):
            if "drop" in name.lower() and isinstance(value, float):
                setattr(m, name, 0.0)
        config = getattr(m, "config", None)
        if isinstance(config, PretrainedConfig) and all(config is not c for c in configs):
            configs.append(config)
    while configs:  # configs and their sub-configs (e.g. text_config)
        config = configs.pop()
        for name, value in list(vars(config).items()):
            if isinstance(value, PretrainedConfig):
                configs.append(value)
            elif "drop" in name.lower() and isinstance(value, float):
                setattr(config, name, 0.0)
    return module


class PolicyValueNet(nn.Module):
    """Interface of the agent's networks (see the module docstring)."""

    def act(self, obs: EnvObs, episode_start: np.ndarray) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def evaluate(self, batch: StepBatch) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    history_observation: bool = False
    """True: an observation holds every earlier one of its episode (a token context) and ``evaluate`` reads only
    each chunk's last (``StepBatch.chunk_obs()``), so rollouts store one context per chunk
    (:mod:`agents.history_obs`); False: ``evaluate`` reads every step's own observation (``StepBatch.obs``)."""

    obs_ndim: int = 1
    """ndim of ONE observation (of ``input_ids`` for dict observations); one more means a batch."""

    def init_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable arguments that rebuild this network (for checkpoints)."""
        raise NotImplementedError


class GridTransformer(PolicyValueNet):
    """Policy/value transformer over small discrete observations.

    Component ``i`` of a ``MultiDiscrete(nvec)`` observation with value ``v`` becomes token
    ``offset_i + v`` at position ``i``; a ``Discrete(n)`` observation is one token. The last
    position's hidden state feeds both heads.
    """

    offsets: Tensor  # (K,) buffer: first token id of each component

    def __init__(
        self, nvec: list[int], num_actions: int, d_model: int = 64, n_layer: int = 2, n_head: int = 4
    ) -> None:
        super().__init__()
        self.nvec = [int(n) for n in nvec]
        self.num_actions = int(num_actions)
        self.d_model, self.n_layer, self.n_head = d_model, n_layer, n_head
        config = GPT2Config(
            vocab_size=sum(self.nvec), n_positions=len(self.nvec), n_embd=d_model,
            n_layer=n_layer, n_head=n_head, bos_token_id=None, eos_token_id=None,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
        self.trunk = GPT2Model(config)
        self.policy_head = nn.Linear(d_model, self.num_actions)
        self.value_head = nn.Linear(d_model, 1)
        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)  # near-uniform initial policy
        nn.init.zeros_(self.policy_head.bias)
        nn.init.orthogonal_(self.value_head.weight, gain=0.01)  # V ≈ 0 at first: no optimism bias
        nn.init.zeros_(self.value_head.bias)
        self.obs_ndim = 0 if len(self.nvec) == 1 else 1  # Discrete obs are scalars, MultiDiscrete (K,)
        self.register_buffer("offsets", torch.tensor(np.cumsum([0] + self.nvec[:-1])), persistent=False)

    @classmethod
    def from_spaces(
        cls, observation_space: gym.Space, action_space: gym.Space, **kwargs: Any
    ) -> GridTransformer:
        if isinstance(observation_space, gym.spaces.Discrete):
            nvec = [int(observation_space.n)]
        elif isinstance(observation_space, gym.spaces.MultiDiscrete) and observation_space.nvec.ndim == 1:
            nvec = [int(n) for n in observation_space.nvec]
        else:
            raise TypeError(
                f"GridTransformer needs a Discrete or 1-D MultiDiscrete observation space, got {observation_space}"
            )
        if not isinstance(action_space, gym.spaces.Discrete):
            raise TypeError(f"the agent needs a Discrete action space, got {action_space}")
        return cls(nvec, int(action_space.n), **kwargs)

    def init_kwargs(self) -> dict[str, Any]:
        return dict(nvec=self.nvec, num_actions=self.num_actions, d_model=self.d_model,
                    n_layer=self.n_layer, n_head=self.n_head)

    def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        obs = obs.reshape(obs.shape[0], -1).long()  # (B, K)
        tokens = obs + self.offsets  # (B, K)
        hidden = self.trunk(input_ids=tokens).last_hidden_state[:, -1]  # (B, D)
        return self.policy_head(hidden), self.value_head(hidden).squeeze(-1)  # (B, A), (B,)

    def act(self, obs: EnvObs, episode_start: np.ndarray) -> tuple[Tensor, Tensor]:
        return self._forward(cast(Tensor, obs_to_tensor(obs, self.device)))

    def evaluate(self, batch: StepBatch) -> tuple[Tensor, Tensor]:
        return self._forward(cast(Tensor, batch.obs))


class CausalLMPolicy(PolicyValueNet):
    """A pretrained causal LM as policy (its LM head) plus a linear value head.

    Observations are ``{"input_ids": (N, L), "attention_mask": (N, L)}``, left padded, as
    TextGen-IMDB-v0 returns them; actions are token ids. Rollouts decode incrementally with a
    KV cache (one new token per row per step; a row's prompt is prefilled only when its
    episode starts). The update reads a chunk's whole sequence (its last observation, cropped
    to the minibatch's longest real length) in one teacher-forced pass and picks the
    logits/values of its steps. Dropout is switched off in ``model`` (in place, see
    :func:`disable_dropout`).
    """

    history_observation = True  # evaluate reads each chunk's last context only
    lm: PreTrainedModel
    peft: Any  # the PeftModel of a LoRA policy (its adapter layers live in lm), else None
    _decoder: IncrementalLM | None

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        fuse_gelu(disable_dropout(model))  # in place: no dropout when sampling and learning; 1-kernel GELU
        # a PeftModel (its adapter is what trains), held outside the module tree: its weights are self.lm's
        object.__setattr__(self, "peft", model if is_peft(model) else None)
        model = unwrap(model)  # the causal LM that runs (a PeftModel's base, adapter layers injected)
        self.lm = model
        self.trunk = model.base_model
        self.policy_head = model.get_output_embeddings()
        self.logits_head = LogitsHead(model)  # the LM head + the model's own post-processing (softcap, scales)
        check_logits_path(model, self.logits_head, forward_left_padded)
        hidden = int(self.logits_head.weight.shape[1])  # the width the trunk returns (OPT may project it)
        self.value_head = nn.Linear(hidden, 1)  # float32 whatever the LM's dtype (values are read in float32)
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1))
        nn.init.zeros_(self.value_head.bias)
        self._decoder = None  # IncrementalLM, built lazily for the number of env rows

    def init_kwargs(self) -> dict[str, Any]:
        return {"model_config": self.lm.config.to_dict()}

    autocast_dtype: torch.dtype | None = None
    """None (default: float32, exact) or torch.bfloat16 / torch.float16: rollout decode and update pass run under
    ``torch.autocast`` (faster on GPUs and on CPUs with bf16 instructions; log-probs only bf16-accurate, so the
    PPO ratio at θ = θ_old is ~1 ± 1e-2 instead of 1 ± 1e-5). Set it on the instance."""

    def _autocast(self) -> torch.autocast:
        dtype = check_autocast_dtype(self.autocast_dtype)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def act(self, obs: EnvObs, episode_start: np.ndarray) -> tuple[Tensor, Tensor]:
        input_ids, attention_mask = obs["input_ids"], obs["attention_mask"]  # (N, L)
        n, dtype, decoder = input_ids.shape[0], check_autocast_dtype(self.autocast_dtype), self._decoder
        if decoder is None or (decoder.num_rows, decoder.device, decoder.autocast_dtype) != (n, self.device, dtype):
            self._decoder = decoder = IncrementalLM(self.lm, n, max_len=int(input_ids.shape[1]),  # rows never
                                                    autocast_dtype=dtype)  # outgrow the observation
        if decoder.cache_length == 0:  # new, or reset by reset_state(): every row starts from its observation
            episode_start = np.ones(n, dtype=bool)
        restart = np.asarray(episode_start, dtype=bool)
        tokens = None
        if not restart.all():
            tokens = torch.as_tensor(np.asarray(input_ids)[:, -1], device=self.device)  # (N,)
        hidden = decoder.step(tokens, restart, input_ids, attention_mask)  # (N, D)
        with self._autocast():
            logits = self.logits_head.post(self.policy_head(hidden))  # (N, V)
            values = self.value_head(hidden.float()).squeeze(-1)  # (N,) float32 whatever the LM's dtype
        return logits.float(), values.float()  # (N, V), (N,)

    def reset_state(self) -> None:
        """Forget the rollout KV cache (after weights change it is stale); the decoder itself (its logits-path
        probe, one forward, already run) is kept for the next rollout."""
        if self._decoder is not None:
            self._decoder.reset()

    def evaluate(self, batch: StepBatch) -> tuple[Tensor, Tensor]:
        obs = cast(dict[str, Tensor], batch.chunk_obs())
        ids, mask = obs["input_ids"], obs["attention_mask"]  # (C, L)
        width = int(mask.sum(1).max())  # columns holding a real token of some chunk (the rest is padding)
        ids, mask = ids[:, -width:], mask[:, -width:]  # (C, W)
        # The chunk's last observation already holds every state of the chunk (its prefixes); the last action
        # is never an input whose output is read, so it is not appended.
        with self._autocast():
            hidden = forward_left_padded(self.lm, ids, mask)  # (C, W, D)
            pos = width - 1 - batch.steps_to_end  # (B,) position whose output predicts the step's action
            h = hidden[batch.chunk, pos]  # (B, D)
            logits = self.logits_head.post(self.policy_head(h))  # (B, V)
            values = self.value_head(h.float()).squeeze(-1)  # (B,)
        return logits.float(), values.float()  # (B, V), (B,)


LM_POLICY_FOR_KEY: dict[str, type[CausalLMPolicy]] = {}
"""Token observations holding one of these keys get that LM policy (:mod:`agents.turn_policy`: ``agent_mask``)."""


def build_network(
    observation_space: gym.Space,
    action_space: gym.Space,
    lm: PreTrainedModel | None = None,
    **grid_kwargs: Any,
) -> PolicyValueNet:
    """The policy/value network for a pair of spaces: a causal LM for token-sequence
    observations (``lm`` required), a small grid transformer for discrete ones."""
    if isinstance(observation_space, gym.spaces.Dict) and "input_ids" in observation_space.spaces:
        if lm is None:
            raise ValueError("token-sequence observations need a causal LM: pass lm=<PreTrainedModel>")
        keys = observation_space.spaces
        return next((cls for key, cls in LM_POLICY_FOR_KEY.items() if key in keys), CausalLMPolicy)(lm)
    return GridTransformer.from_spaces(observation_space, action_space, **grid_kwargs)
