"""What a training run is: :class:`TrainConfig` (every ``runners.train`` option), the presets per env and
algorithm, and the builders of a run's vector env and agent."""

from __future__ import annotations

import copy
import dataclasses
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
from runners.common import distributed


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
    """CatGrid-v0 probability that a move slips sideways"""
    model: str = "lvwerra/gpt2-imdb"
    """TextGen-IMDB-v0 policy (and reference) LM: HF id or local dir"""
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
    kl_coef: float = 0.2
    """TextGen-IMDB-v0: initial KL penalty beta"""
    adaptive_kl: bool = True
    """TextGen-IMDB-v0: adapt beta toward kl_target (Ziegler et al.)"""
    kl_target: float = 6.0
    kl_horizon: float = 10000.0
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
            "keep_checkpoints": "int>=1", "eval_episodes": "int>=0", "sample_every": "int>=1", "threads": "int>=1?",
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
            f"max_new_tokens_range must be None or (lo, hi) with 1 <= lo <= hi, got {rng}":
                lambda: rng is None or (len(rng) == 2 and 1 <= rng[0] <= rng[1]),
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


def preset(env: str, algo: str = "ppo") -> TrainConfig:
    """Default configuration for an environment and algorithm."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: choose one of {', '.join(ALGOS)}")
    if env == "CatGrid-v0":
        if algo in ("reinforce", "rloo"):  # one gradient step per rollout: both need the longer budget
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
          "group_size": cfg.group_size}
    if cfg.agent.temperature != 1.0:  # the reference's log-probs at the policy's sampling temperature
        kw["temperature"] = cfg.agent.temperature
    if cfg.env == "TextGen-v0":
        kw |= {"prompt_field": cfg.prompt_field, "chat_template": cfg.chat_template,
               "max_prompt_len": cfg.max_prompt_len}
    else:
        kw["text_field"] = cfg.text_field
    if cfg.dataset:
        kw["dataset"] = cfg.dataset
    return kw


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
        if model is not None:  # an object from env_overrides: the env keeps its own frozen reference copy
            lm = copy.deepcopy(model).to(device)
        else:
            lm, _ = load_causal_lm(cfg.model, device=device)
    net = build_network(envs.single_observation_space, envs.single_action_space, lm=lm,
                        d_model=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head).to(device)
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


