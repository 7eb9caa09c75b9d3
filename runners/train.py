"""Train the agent (PPO, REINFORCE, RLOO or GRPO) on CatGrid-v0 or TextGen-IMDB-v0.

    python -m runners.train --env CatGrid-v0 --algo ppo --seed 0
    python -m runners.train --env CatGrid-v0 --algo reinforce --map-name 8x8
    python -m runners.train --env CatGrid-v0 --algo rloo --group-size 4
    python -m runners.train --env TextGen-IMDB-v0 --model PATH --reward-model PATH|vader
    python -m runners.train --resume runs/CatGrid-v0__ppo__0__1732450000
    torchrun --nproc-per-node 2 -m runners.train --env CatGrid-v0 --num-envs 32   # data-parallel

``--help`` lists every option with the defaults of the chosen ``--env`` and ``--algo``. TensorBoard logs go to
``runs/<env>__<algo>__<seed>__<time>`` with CleanRL's tag names; the run directory also holds ``checkpoint/``
(safetensors + JSON, written atomically) and ``eval.json``. An existing run directory is never appended to:
continue it with ``--resume``.

Under ``torchrun`` (:mod:`runners.distributed`) every rank runs its own ``--num-envs`` envs
(env seeds offset by ``rank × num_envs``, sampling seed ``seed + rank``) and the gradients are
combined every optimizer step; ``--total-timesteps`` counts the steps of all ranks. Rank 0
alone writes TensorBoard, checkpoints and the evaluation, from the episodes of all ranks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import envs as _registered_envs  # noqa: F401  (registers the environments)
from agents.agent import Agent, AgentConfig
from agents.kl import AdaptiveKLController
from agents.networks import CausalLMPolicy, build_network
from envs.lm import load_causal_lm, resolve_device
from runners import cli, distributed, logging_utils, runs
from runners import resume as exact_resume
from runners.atomic import check_writable
from runners.checkpoint import load_checkpoint, load_resume_state, read_state, recover, save_checkpoint
from runners.evaluate import evaluate_report, format_report
from runners.export import export_policy
from runners.rollout import RolloutCollector, env_attr, get_kl_coef, set_env_attr
from runners.validate import check_fields


@dataclass
class TrainConfig:
    """One training run. The defaults shown are those of the chosen --env and --algo."""

    env: Literal["CatGrid-v0", "TextGen-IMDB-v0"] = "CatGrid-v0"
    algo: Literal["ppo", "reinforce", "rloo", "grpo"] = "ppo"
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
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
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
            "stop_at_update": "int>=1?", "max_minutes": ">0?", "dist_timeout": ">0",
        }, extra={
            f"total_timesteps ({self.total_timesteps}) must cover at least one rollout of num_envs x num_steps = "
            f"{self.num_envs} x {self.num_steps} steps": lambda: self.total_timesteps >= self.num_envs * self.num_steps,
            f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})": lambda: self.d_model % self.n_head == 0,
            f"group_size ({self.group_size}) must divide num_envs ({self.num_envs})":
                lambda: self.num_envs % self.group_size == 0,
            f"algo={self.algo!r} compares the episodes of a group: pass --group-size >= 2":
                lambda: self.algo not in ("rloo", "grpo") or self.group_size >= 2,
            f"max_new_tokens_range must be None or (lo, hi) with 1 <= lo <= hi, got {rng}":
                lambda: rng is None or (len(rng) == 2 and 1 <= rng[0] <= rng[1]),
        })

    @property
    def num_updates(self) -> int:
        """Updates (rollouts per rank) to reach ``total_timesteps`` with every rank of this job."""
        return max(1, self.total_timesteps // (self.num_envs * self.num_steps * distributed.world_size()))

    def saved(self) -> dict[str, Any]:
        """The config as stored in a checkpoint (one-shot resume options cleared)."""
        return dataclasses.asdict(self) | {"resume": None, "reset_optimizer": False, "reset_schedule": False,
                                           "stop_at_update": None}


ALGOS = ("ppo", "reinforce", "rloo", "grpo")


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
    if env == "TextGen-IMDB-v0":
        agent = AgentConfig(algo=algo, gamma=1.0, gae_lambda=0.95, learning_rate=1.41e-5, anneal_lr=False,
                            update_epochs=4 if algo in ("ppo", "grpo") else 1, num_minibatches=4, ent_coef=0.0,
                            vf_coef=0.1, max_grad_norm=1.0, norm_adv=True,
                            kl_mode="loss" if algo == "grpo" else "reward",
                            reinforce_return="episode" if algo == "rloo" else "to_go")  # RLOO: sequence level
        return TrainConfig(env=env, algo=algo, total_timesteps=64 * 17 * 100, num_envs=64, num_steps=17,
                           group_size=4 if algo in ("rloo", "grpo") else 1,
                           reward_scale=1.0, agent=agent, checkpoint_every=20, eval_episodes=0)
    raise ValueError(f"unknown env {env!r}: choose CatGrid-v0 or TextGen-IMDB-v0")


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """``--env``/``--algo`` pick the preset, tyro parses the rest on top of it."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default="CatGrid-v0")
    pre.add_argument("--algo", default="ppo")
    pre.add_argument("--resume", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.resume:
        default = TrainConfig.from_dict(read_state(_checkpoint_dir(Path(known.resume)))["config"])
    else:
        default = preset(known.env, known.algo)
    cfg = cli.parse(TrainConfig, "runners.train", __doc__, args=argv, default=default)
    cfg.agent.algo = cfg.algo
    return cfg


def _checkpoint_dir(path: Path) -> Path:
    return path / "checkpoint" if (path / "checkpoint").exists() or (path / "checkpoint").is_symlink() else path


def env_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.env == "CatGrid-v0":
        return {"map_name": cfg.map_name, "slip": cfg.slip}
    kw = {"model": cfg.model, "reward_model": cfg.reward_model, "kl_coef": cfg.kl_coef, "device": cfg.device,
          "max_new_tokens": tuple(cfg.max_new_tokens_range) if cfg.max_new_tokens_range else cfg.max_new_tokens,
          "min_new_tokens": cfg.min_new_tokens, "missing_eos_penalty": cfg.missing_eos_penalty,
          "group_size": cfg.group_size, "text_field": cfg.text_field}
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


def train(cfg: TrainConfig, env_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run training; returns final statistics (and the evaluation report when enabled).

    ``env_overrides`` (programmatic use) replaces env kwargs with objects, e.g.
    ``{"reward_model": my_callable}`` or ``{"model": model, "tokenizer": tok}``; a model
    object given there is also the policy's starting point (deep-copied).
    """
    cfg.__post_init__()  # fields may have been changed after construction
    cli.quiet_transformers()
    runs.check_reloadable(cfg, env_overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info = distributed.init_distributed(cfg.device, cfg.dist_timeout)  # no-op without torchrun
    rank, world = dist_info.rank, dist_info.world_size
    main_rank = rank == 0  # the one rank that writes logs, checkpoints and the evaluation
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (rank 0's are broadcast anyway)
    np.random.seed(cfg.seed)
    cfg.agent.algo = cfg.algo
    resume_state = None
    if cfg.resume:
        run_dir = Path(cfg.resume)
        run_dir = run_dir.parent if run_dir.name.startswith("checkpoint") else run_dir
        found = None
        with distributed.agree_on_errors("recovering the checkpoint"):
            if main_rank:  # leftovers of an interrupted save are cleaned up by the one writer
                found = recover(run_dir / "checkpoint") is not None
        if not distributed.broadcast_object(found):
            raise FileNotFoundError(f"{run_dir} holds no complete checkpoint to resume from")
        resume_state = read_state(run_dir / "checkpoint")
        if (done := runs.finished_message(run_dir, resume_state, cfg.num_updates)) is not None:
            print(done, file=sys.stderr)
            return {"run_dir": str(run_dir), "global_step": resume_state["global_step"], "finished": True}
    else:
        run_dir = None
        with distributed.agree_on_errors("choosing the run directory"):
            if main_rank:
                default = f"{cfg.env}__{cfg.algo}__{cfg.seed}__{int(time.time())}"
                run_dir = runs.new_run_dir(cfg.log_dir, cfg.run_name, default)
        run_dir = distributed.broadcast_object(run_dir)  # rank 0 names the run
    if main_rank:
        check_writable(run_dir, "run")
    recorded = runs.recorded_config(cfg.saved(), env_overrides)
    envs = make_envs(cfg, overrides=env_overrides)
    agent = build_agent(cfg, envs, total_updates=cfg.num_updates, model=(env_overrides or {}).get("model"))
    global_step, start_update = 0, 0
    if resume_state is not None:
        load_checkpoint(run_dir / "checkpoint", agent, reset_optimizer=cfg.reset_optimizer)
        global_step, start_update = resume_state["global_step"], agent.num_updates
        if resume_state.get("world_size", 1) != world:
            raise ValueError(f"{run_dir} was trained by {resume_state.get('world_size', 1)} process(es), this job has "
                             f"{world}: resume with the same number (torchrun --nproc-per-node/--nnodes)")
        exact_resume.set_lr_schedule(agent, cfg, resume_state)
    distributed.broadcast_module(agent.net)  # every rank starts from rank 0's weights
    if world > 1:  # each rank samples its own actions
        torch.manual_seed(cfg.seed + rank)
        np.random.seed(cfg.seed + rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = init_tracking(cfg, run_dir, recorded) if cfg.track and main_rank else None
    # a crashed run may have logged past its last checkpoint: TensorBoard drops those steps
    purge = global_step + 1 if resume_state is not None else None
    writer = SummaryWriter(str(run_dir), purge_step=purge) if main_rank else distributed.NullWriter()
    if resume_state is None:
        writer.add_text("config", logging_utils.config_table(recorded))
    kl_ctl = None
    if get_kl_coef(envs) is not None and cfg.adaptive_kl:
        beta = resume_state.get("kl_coef", cfg.kl_coef) if resume_state else cfg.kl_coef
        kl_ctl = AdaptiveKLController(beta, cfg.kl_target, cfg.kl_horizon)
        set_env_attr(envs, "kl_coef", beta)
    # rank r's sub-envs get the seeds one process with ranks x num_envs envs would give them
    env_seed = cfg.seed + start_update + rank * cfg.num_envs
    collector = RolloutCollector(envs, agent, cfg.num_steps, cfg.reward_scale, seed=env_seed, group_size=cfg.group_size)
    collector.global_step = global_step
    if resume_state is not None and world == 1:  # RNG/env/collector state of the one process
        exact_resume.restore(envs, collector, load_resume_state(run_dir / "checkpoint"))

    def checkpoint(step: int) -> None:
        if main_rank:
            save_checkpoint(run_dir / "checkpoint", agent, recorded, step, keep=cfg.keep_checkpoints,
                            resume_state=exact_resume.capture(envs, collector) if world == 1 else None,
                            lr_schedule=exact_resume.lr_schedule(agent), world_size=world,
                            **({"kl_coef": kl_ctl.value} if kl_ctl else {}))

    recent: dict[str, list[float]] = {"return": [], "score": [], "kl": []}
    t0, steps0 = time.time(), global_step
    if cfg.progress and main_rank:
        print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir.parent})", file=sys.stderr)
    bar = tqdm(total=cfg.num_updates * cfg.num_envs * cfg.num_steps * world, initial=global_step,
               disable=not (cfg.progress and main_rank), desc=run_dir.name, unit="step", unit_scale=True,
               dynamic_ncols=True)
    stopped_early = None
    for update in range(start_update, cfg.num_updates):
        if cfg.max_minutes is not None and distributed.any_rank(time.time() - t0 > cfg.max_minutes * 60):
            stopped_early = (f"wall-clock cap of {cfg.max_minutes} min reached after {update} of {cfg.num_updates} "
                             "updates; this is NOT the configured run")
            print(f"WARNING: {stopped_early}", file=sys.stderr, flush=True)
            checkpoint(collector.global_step)
            break
        if cfg.stop_at_update is not None and update >= cfg.stop_at_update:
            stopped_early = f"stopped at update {update} of {cfg.num_updates} (--stop-at-update)"
            print(f"{stopped_early}; continue with --resume {run_dir}", file=sys.stderr, flush=True)
            break
        with distributed.agree_on_errors("the rollout"):  # a failing rank (e.g. bad reward) stops every rank
            rollout, log = collector.collect()
        if world > 1:
            collector.global_step += (world - 1) * cfg.num_steps * cfg.num_envs  # global_step counts all ranks
            log = distributed.gather_lists(log)  # logs and the KL controller see the episodes of all ranks
        stats = agent.update(rollout)
        step = collector.global_step
        stats["SPS"] = (step - steps0) / max(time.time() - t0, 1e-9)
        logging_utils.log_update(writer, step, stats, log)
        recent = logging_utils.update_recent(recent, log)
        if kl_ctl is not None:
            if log.kls:
                set_env_attr(envs, "kl_coef", kl_ctl.update(float(np.mean(log.kls)), len(log.kls)))
            writer.add_scalar("objective/kl_coef", kl_ctl.value, step)
        elif log.kls:  # fixed β
            writer.add_scalar("objective/kl_coef", cfg.kl_coef, step)
        if log.texts and (update % cfg.sample_every == 0):
            writer.add_text("samples", logging_utils.samples_table(log), step)
        bar.set_postfix(logging_utils.postfix(recent), refresh=False)
        bar.update(step - bar.n)
        if (update + 1) % cfg.checkpoint_every == 0 or update + 1 in (cfg.num_updates, cfg.stop_at_update):
            checkpoint(step)
    result: dict[str, Any] = {"run_dir": str(run_dir), "global_step": collector.global_step,
                              "wall_time": time.time() - t0, "stopped_early": stopped_early,
                              **{f"recent_{k}": float(np.mean(v)) for k, v in recent.items() if v}}
    bar.close()
    if isinstance(agent.net, CausalLMPolicy) and main_rank:  # the trained LM as a transformers dir: <run dir>/policy
        hi = cfg.max_new_tokens_range[1] if cfg.max_new_tokens_range else cfg.max_new_tokens
        result["policy_dir"] = str(export_policy(agent.net, env_attr(envs, "tokenizer"), run_dir, hi,
                                                 cfg.min_new_tokens))
    envs.close()
    paused = cfg.stop_at_update is not None and cfg.stop_at_update < cfg.num_updates
    if cfg.eval_episodes > 0 and main_rank and not paused:
        eval_envs = make_envs(cfg, eval_mode=True, overrides=env_overrides)
        with torch.no_grad():
            report = evaluate_report(agent, eval_envs, cfg.eval_episodes, cfg.agent.gamma, seed=10_000 + cfg.seed)
        eval_envs.close()
        print(format_report(report))
        logging_utils.log_eval(writer, collector.global_step, report)
        logging_utils.log_rendered_episode(writer, cfg, agent, env_kwargs(cfg), collector.global_step)
        (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
        result["eval"] = report
    writer.close()
    if tracker is not None:
        tracker.finish()
    result["agent"] = agent
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    try:
        return train(parse_args(argv))
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
