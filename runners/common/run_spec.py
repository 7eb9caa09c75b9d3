"""What a training run is: :class:`TrainConfig` (every ``runners.train`` option), the presets per env and
algorithm, and the builders of a run's vector env and agent."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym

import envs as _registered_envs  # noqa: F401  (registers the environments)
from agents.agent import Agent, AgentConfig
from agents.algos import ALGOS, AlgoName
from agents.networks import build_network
from agents.validate import check_fields, group_size_fits
from envs.lm import load_causal_lm, resolve_device
from envs.lm.kv_cache import check_autocast_dtype
from envs.lm.loading import DTYPES, is_peft, unwrap
from runners.common import distributed
from runners.common import run_dir as runs


@dataclass(frozen=True)
class TrainConfig:
    """One training run. The defaults shown are those of the chosen --env and --algo."""

    env: Literal["CatGrid-v0", "TextGen-IMDB-v0", "TextGen-v0"] = "CatGrid-v0"
    algo: AlgoName = "ppo"
    seed: int = 0
    total_timesteps: int = 300_000
    """env steps of all ranks together (T x N x ranks per rollout, reset steps included)"""
    num_envs: int = 64
    """vector envs PER RANK (torchrun: the global batch is ranks x num_envs x num_steps)"""
    num_steps: int = 64
    """rollout length T per env"""
    vectorization_mode: Literal["vector_entry_point", "sync", "async"] = "vector_entry_point"
    reward_scale: float = 0.01
    """multiplies the learning reward (not the logged returns)"""
    agent: AgentConfig = field(default_factory=AgentConfig)
    group_size: int = 1
    """RLOO/GRPO: rows per group (text: rows sharing a prompt; CatGrid: rows i // group_size); divides num_envs"""
    d_model: int = 64
    """CatGrid-v0 network: transformer width"""
    n_layer: int = 2
    """CatGrid-v0 network: transformer layers"""
    n_head: int = 4
    """CatGrid-v0 network: attention heads"""
    map_name: str = "5x5"
    """CatGrid-v0 map (envs.catgrid.MAPS)"""
    slip: float = 0.2
    """CatGrid-v0 probability that a move fails (the cat stays in place)"""
    model: str = "lvwerra/gpt2-imdb"
    """TextGen-IMDB-v0 policy (and reference) LM: HF id or local dir"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """TextGen-IMDB-v0: the dtype the policy's weights are held in (the value head and log-softmax stay float32)"""
    ref_dtype: Literal["float32", "bfloat16", "float16"] | None = None
    """TextGen-IMDB-v0: the reference's weight dtype (default: --dtype)"""
    reward_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """TextGen-IMDB-v0: the reward model's weight dtype"""
    ref_device: str | None = None
    """TextGen-IMDB-v0: the device of the env's reference model (default: --device), e.g. cuda:1"""
    reward_device: str | None = None
    """TextGen-IMDB-v0: the device of the reward model (default: --device)"""
    lora_r: int = 0
    """TextGen-IMDB-v0: train a LoRA adapter of this rank instead of every weight (0: off; needs peft,
    pip install 'rlhf-gym[lora]'); the reference is the base model with the adapter disabled"""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (the adapter's output is scaled by lora_alpha / lora_r)"""
    lora_target_modules: tuple[str, ...] | None = None
    """module names that get an adapter, e.g. q_proj v_proj (default: peft's choice for the architecture)"""
    gradient_checkpointing: bool = False
    """TextGen-IMDB-v0: recompute the policy's activations in the backward pass (less memory, ~1/3 more compute)"""
    export_merged: bool = False
    """LoRA runs: also export <run dir>/policy-merged/, the adapter merged into a plain transformers model"""
    reward_model: str = "lvwerra/distilbert-imdb"
    """TextGen-IMDB-v0 reward: HF classifier id or local dir, or 'vader'"""
    dataset: str | None = None
    """TextGen-IMDB-v0 prompts: a .jsonl[.gz] file, a dir with train.jsonl.gz, or an HF dataset id
    (default: the local IMDB copy, else stanfordnlp/imdb)"""
    text_field: str = "text"
    """TextGen-IMDB-v0: the dataset column holding the review text"""
    prompt_field: str = "prompt"
    """TextGen-v0: the dataset column holding the whole prompt (a string or chat messages)"""
    chat_template: bool = False
    """TextGen-v0: render string prompts as a user message through the tokenizer's chat template"""
    max_prompt_len: int | None = None
    """TextGen-v0: drop prompts longer than this many tokens (default: keep every prompt)"""
    max_new_tokens: int = 16
    """TextGen-IMDB-v0: response length cap (tokens)"""
    max_new_tokens_range: tuple[int, int] | None = None
    """TextGen-IMDB-v0: (lo, hi): each episode draws its length cap from lo..hi (TRL's LengthSampler);
    overrides max_new_tokens"""
    min_new_tokens: int = 0
    """TextGen-IMDB-v0: EOS is masked out of the allowed actions before this many new tokens"""
    missing_eos_penalty: float | None = None
    """TextGen-IMDB-v0: subtracted from the score of an episode that ends without EOS"""
    add_bos: bool | None = None
    """TextGen-IMDB-v0: start prompts with BOS (default: the tokenizer's own default)"""
    eos_token_ids: tuple[int, ...] | None = None
    """TextGen-IMDB-v0: the token ids that end an episode (default: every EOS id of the model's
    generation_config plus the tokenizer's EOS)"""
    kl_coef: float = 0.2
    """TextGen-IMDB-v0: initial KL penalty beta"""
    adaptive_kl: bool = True
    """TextGen-IMDB-v0: adapt beta toward kl_target (Ziegler et al.)"""
    kl_target: float = 6.0
    kl_horizon: float = 10000.0
    autocast_dtype: Literal["bfloat16", "float16"] | None = None
    """TextGen-IMDB-v0: opt-in torch.autocast of the reference, the reward model and the policy (rollout and
    update); off (float32) unless given, never chosen by the hardware"""
    ref_mode: Literal["per_step", "one_pass"] = "one_pass"
    """TextGen-IMDB-v0: the reference scores each finished response in one teacher-forced pass (one_pass) or
    decodes beside the policy (per_step); same per-token rewards up to float rounding"""
    log_dir: str = "runs"
    run_name: str | None = None
    """default: <env>__<algo>__<seed>__<unix time>; an existing run is never appended to (use --resume)"""
    checkpoint_every: int = 50
    """updates between checkpoints (a final one is always written)"""
    keep_checkpoints: int = 3
    """newest checkpoint-<update>/ directories kept in the run dir"""
    resume: str | None = None
    """run directory (or its checkpoint/) to continue, exactly where its last checkpoint stopped"""
    reset_optimizer: bool = False
    """on --resume: start Adam afresh (required when the checkpoint has no optimizer.pt)"""
    reset_schedule: bool = False
    """on --resume with a larger --total-timesteps and --agent.anneal-lr: anneal as if the run had been
    started with the new total (the LR jumps up); default: the schedule stays fixed by the original total"""
    stop_at_update: int | None = None
    """stop after this many updates (with a checkpoint); --resume continues to --total-timesteps"""
    eval_episodes: int = 500
    """episodes of the final greedy and sampled evaluation (0: none)"""
    sample_every: int = 10
    """updates between TensorBoard text tables of samples (text envs)"""
    device: str = "auto"
    """auto (CUDA if available), cpu or cuda[:N]"""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)"""
    progress: bool = True
    """show a progress bar"""
    track: bool = False
    """also log to Weights & Biases (TensorBoard scalars synced, as CleanRL); pip install 'rlhf-gym[track]'"""
    wandb_project: str = "rlhf-gym"
    wandb_entity: str | None = None
    max_minutes: float | None = None
    """optional wall-clock cap: stops early, loudly (result["stopped_early"]); the length is total_timesteps"""
    dist_timeout: float = 1800.0
    """torchrun runs: seconds a rank waits for the others at a sync point before the job fails"""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["agent"] = AgentConfig(**d.get("agent", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)

    def __post_init__(self) -> None:
        rng = self.max_new_tokens_range
        check_fields(self, {
            "seed": "int>=0", "total_timesteps": "int>=1", "num_envs": "int>=1", "num_steps": "int>=1",
            "reward_scale": ">0", "group_size": "int>=1", "d_model": "int>=1", "n_layer": "int>=1", "n_head": "int>=1",
            "slip": "[0,1)", "max_new_tokens": "int>=1", "min_new_tokens": "int>=0", "missing_eos_penalty": ">=0?",
            "kl_coef": ">=0", "kl_target": ">0", "kl_horizon": ">0", "checkpoint_every": "int>=1",
            "keep_checkpoints": "int>=1", "lora_r": "int>=0", "lora_alpha": ">0", "eval_episodes": "int>=0",
            "sample_every": "int>=1", "threads": "int>=1?",
            "stop_at_update": "int>=1?", "max_minutes": ">0?", "dist_timeout": ">0", "max_prompt_len": "int>=1?",
        }, extra={
            f"total_timesteps ({self.total_timesteps}) must cover at least one rollout of num_envs x num_steps = "
            f"{self.num_envs} x {self.num_steps} steps": lambda: self.total_timesteps >= self.num_envs * self.num_steps,
            f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})":
                lambda: self.d_model % self.n_head == 0,
            f"group_size ({self.group_size}) must divide num_envs ({self.num_envs})":
                lambda: group_size_fits(self.num_envs, self.group_size),
            f"algo={self.algo!r} compares the episodes of a group: pass --group-size >= 2":
                lambda: self.algo not in ALGOS or not ALGOS[self.algo].group_based or self.group_size >= 2,
            f"seed ({self.seed}) must be < 2**32 = 4294967296 (numpy seeds are 32-bit): pick a smaller --seed":
                lambda: self.seed < 2**32,
            str(runs.check_run_name(self.run_name)): lambda: runs.check_run_name(self.run_name) is None,
            "log_dir must not be empty (use --log-dir . for the current directory)": lambda: self.log_dir != "",
            f"max_new_tokens_range must be None or (lo, hi) with 1 <= lo <= hi, got {rng}":
                lambda: rng is None or (len(rng) == 2 and 1 <= rng[0] <= rng[1]),
            "--lora-r needs the policy and the env's reference in one process (they share the weights): use "
            "--vectorization-mode vector_entry_point or sync":
                lambda: not self.lora_r or self.vectorization_mode != "async",
            micro_batch_problem(self) or "": lambda: micro_batch_problem(self) is None,
            "--ref-device: with --lora-r the reference is the policy itself (its base, adapter disabled), on --device; "
            "leave --ref-device unset": lambda: not self.lora_r or self.ref_device is None
                or resolve_device(self.ref_device) == resolve_device(self.device),
            "--dtype float16 would train float16 weights, whose gradients a gradient scaler cannot unscale: add "
            "--lora-r (a float32 adapter over the float16 base, trained with a gradient scaler), or use --dtype "
            "bfloat16, or float32 weights with --autocast-dtype float16; float16 is fine for the frozen --ref-dtype "
            "and --reward-dtype": lambda: self.dtype != "float16" or self.lora_r > 0,
        })
        if self.agent.algo != self.algo:  # --algo is the one switch: the agent's config follows it
            object.__setattr__(self, "agent", dataclasses.replace(self.agent, algo=self.algo))

    @property
    def num_updates(self) -> int:
        """Updates (rollouts per rank) to reach ``total_timesteps`` with every rank of this job."""
        return max(1, self.total_timesteps // (self.num_envs * self.num_steps * distributed.world_size()))

    def saved(self) -> dict[str, Any]:
        """The config as stored in a checkpoint (one-shot resume options cleared)."""
        return dataclasses.asdict(self) | {"resume": None, "reset_optimizer": False, "reset_schedule": False,
                                           "stop_at_update": None}


def micro_batch_problem(cfg: TrainConfig) -> str | None:
    """Text envs: ``--agent.micro-batch-size`` must split a minibatch (``num_envs / num_minibatches`` sequences
    when each row holds one episode per rollout) into equal micro-batches; None when it does."""
    size, n, k = cfg.agent.micro_batch_size, cfg.num_envs, cfg.agent.num_minibatches
    if size is None or cfg.env == "CatGrid-v0" or (n % k == 0 and (n // k) % size == 0):
        return None
    return (f"--agent.micro-batch-size ({size}) must divide the sequences of a minibatch, num_envs / num_minibatches "
            f"= {n} / {k}: pick a divisor of {n // k}" if n % k == 0 else
            f"--agent.micro-batch-size needs num_minibatches ({k}) to divide num_envs ({n})")


def preset(env: str, algo: str = "ppo") -> TrainConfig:
    """Default configuration for an environment and algorithm."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: choose one of {', '.join(ALGOS)}")
    if env == "CatGrid-v0":
        if algo in ("reinforce", "rloo", "rebn"):  # one gradient step per rollout: they need the longer budget
            return TrainConfig(env=env, algo=algo, total_timesteps=600_000, num_envs=16, num_steps=256,
                               group_size=4 if algo == "rloo" else 1,
                               agent=AgentConfig(algo=algo, learning_rate=1e-3, num_minibatches=1,
                                                 anneal_lr=True, ent_coef=0.01))
        if algo == "grpo":
            return TrainConfig(env=env, algo=algo, total_timesteps=200_000, num_envs=16, num_steps=256, group_size=4,
                               agent=AgentConfig(algo=algo, learning_rate=5e-4, update_epochs=4, num_minibatches=4,
                                                 anneal_lr=True, ent_coef=0.01))
        return TrainConfig(env=env, algo=algo)
    if env in ("TextGen-IMDB-v0", "TextGen-v0"):
        agent = AgentConfig(algo=algo, gamma=1.0, gae_lambda=0.95, learning_rate=1.41e-5, anneal_lr=False,
                            update_epochs=4 if algo in ("ppo", "grpo") else 1, num_minibatches=4, ent_coef=0.0,
                            vf_coef=0.1, max_grad_norm=1.0, norm_adv=True,
                            kl_mode="loss" if algo == "grpo" else "reward",
                            reinforce_return="episode" if algo == "rloo" else "to_go")  # RLOO: sequence level
        return TrainConfig(env=env, algo=algo, total_timesteps=64 * 17 * 100, num_envs=64, num_steps=17,
                           group_size=4 if algo in ("rloo", "grpo") else 1,
                           reward_scale=1.0, agent=agent, checkpoint_every=20, eval_episodes=0)
    raise ValueError(f"unknown env {env!r}: choose CatGrid-v0, TextGen-IMDB-v0 or TextGen-v0")


def env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The env kwargs of a run (what ``gym.make_vec`` gets besides ``num_envs``)."""
    if cfg.env == "CatGrid-v0":
        return {"map_name": cfg.map_name, "slip": cfg.slip}
    kw = {"model": cfg.model, "reward_model": cfg.reward_model, "kl_coef": cfg.kl_coef, "device": cfg.device,
          "max_new_tokens": tuple(cfg.max_new_tokens_range) if cfg.max_new_tokens_range else cfg.max_new_tokens,
          "min_new_tokens": cfg.min_new_tokens, "missing_eos_penalty": cfg.missing_eos_penalty,
          "group_size": cfg.group_size, "ref_mode": cfg.ref_mode, "autocast_dtype": cfg.autocast_dtype,
          "ref_dtype": cfg.ref_dtype or cfg.dtype, "reward_dtype": cfg.reward_dtype}
    if cfg.agent.temperature != 1.0:  # the reference's log-probs at the policy's sampling temperature
        kw["temperature"] = cfg.agent.temperature
    if cfg.env == "TextGen-v0":
        kw |= {"prompt_field": cfg.prompt_field, "chat_template": cfg.chat_template,
               "max_prompt_len": cfg.max_prompt_len}
    else:
        kw["text_field"] = cfg.text_field
    if cfg.dataset:
        kw["dataset"] = cfg.dataset
    if cfg.add_bos is not None:
        kw["add_bos"] = cfg.add_bos
    if cfg.eos_token_ids:
        kw["eos_token_ids"] = list(cfg.eos_token_ids)
    for name in ("ref_device", "reward_device"):
        if getattr(cfg, name) is not None:
            kw[name] = getattr(cfg, name)
    return kw


def with_lora(cfg: TrainConfig, overrides: dict[str, Any] | None) -> dict[str, Any] | None:
    """``overrides`` with the run's LoRA policy (``--lora-r``) as ``model``: a peft ``PeftModel`` over ``--model``
    (or over a copy of the ``model`` object in ``overrides``), shared by the env (its reference: the base with
    the adapter disabled) and the agent (the policy). Unchanged without ``--lora-r``."""
    if not cfg.lora_r or cfg.env == "CatGrid-v0":
        return overrides
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("--lora-r trains a LoRA adapter with peft, which is not installed: "
                          "pip install 'rlhf-gym[lora]'") from None
    overrides = dict(overrides or {})
    given = overrides.get("model")
    if given is not None:
        base, tok = copy.deepcopy(given).to(dtype=DTYPES[cfg.dtype]), overrides.get("tokenizer")
    else:
        base, tok = load_causal_lm(cfg.model, device="cpu", dtype=cfg.dtype)
    targets = list(cfg.lora_target_modules) if cfg.lora_target_modules else None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets,
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lora).to(resolve_device(cfg.device))
    return overrides | {"model": model, "tokenizer": tok}


def make_envs(
    cfg: TrainConfig, num_envs: int | None = None, eval_mode: bool = False, overrides: dict[str, Any] | None = None
) -> gym.vector.VectorEnv:
    """The vector env of a run, wrapped in RecordEpisodeStatistics. ``overrides`` replaces env
    kwargs with objects a CLI cannot express (a model object, a reward callable)."""
    kwargs = env_kwargs(cfg) | (overrides or {})
    if eval_mode:
        kwargs.pop("group_size", None)  # evaluation: one episode per prompt, any number of rows
    envs = gym.make_vec(cfg.env, num_envs=num_envs or cfg.num_envs, vectorization_mode=cfg.vectorization_mode, **kwargs)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def build_agent(
    cfg: TrainConfig, envs: gym.vector.VectorEnv, total_updates: int | None, model: Any = None
) -> Agent:
    """The agent for ``envs``; text envs get a causal-LM policy loaded from ``model`` (default ``cfg.model``)."""
    device = resolve_device(cfg.device)
    lm = None
    if isinstance(envs.single_observation_space, gym.spaces.Dict):
        if is_peft(model):  # a LoRA policy (with_lora): the env's reference is the same model, adapter disabled
            lm = model
        elif model is not None:  # an object from env_overrides: the env keeps its own frozen reference copy
            lm = copy.deepcopy(model).to(device=device, dtype=DTYPES[cfg.dtype])
        else:
            lm, _ = load_causal_lm(cfg.model, device=device, dtype=cfg.dtype)
    net = build_network(envs.single_observation_space, envs.single_action_space, lm=lm,
                        d_model=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head).to(device)
    if lm is not None and cfg.autocast_dtype is not None:
        net.autocast_dtype = check_autocast_dtype(cfg.autocast_dtype)  # CausalLMPolicy: rollout and update
    if lm is not None and cfg.gradient_checkpointing:  # active in the update only (train mode), never in rollouts
        unwrap(lm).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lm is not None and cfg.dtype != "float32" and not cfg.lora_r:
        warnings.warn(f"--dtype {cfg.dtype} trains the {cfg.dtype} weights themselves: Adam steps smaller than "
                      "their resolution are lost (at the preset's learning rate 1.41e-5 we measured 19% of a tiny "
                      "GPT-2's weights moving in 32 steps). Prefer --lora-r (a float32 adapter over the "
                      f"{cfg.dtype} base) or float32 weights.", stacklevel=2)
    net.eval()
    return Agent(net, cfg.agent, total_updates=total_updates)


def init_tracking(cfg: TrainConfig, run_dir: Path, config: dict[str, Any]) -> Any:
    """Start a Weights & Biases run that mirrors the TensorBoard logs (call before creating the SummaryWriter)."""
    try:
        import wandb
    except ImportError:
        raise ImportError("--track logs to Weights & Biases, which is not installed: pip install 'rlhf-gym[track]'"
                          ) from None
    return wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, name=run_dir.name, dir=str(run_dir),
                      config=config, sync_tensorboard=True, resume="allow" if cfg.resume else None)


