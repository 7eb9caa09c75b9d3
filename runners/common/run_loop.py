"""The training loop of ``runners.train``: :func:`train` runs a :class:`~runners.common.run_spec.TrainConfig`
from a fresh or resumed run directory to its checkpoints, evaluation and exported policy."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import envs as _registered_envs  # noqa: F401  (registers the environments)
from agents.kl import AdaptiveKLController
from agents.networks import CausalLMPolicy
from agents.rollout import RolloutCollector, env_attr, get_kl_coef, set_env_attr
from runners.common import cli, distributed
from runners.common import logs as logging_utils
from runners.common import resume as exact_resume
from runners.common import run_dir as runs
from runners.common.atomic import check_writable
from runners.common.checkpoint import (
    load_checkpoint,
    load_resume_state,
    read_state,
    recover,
    save_checkpoint,
)
from runners.common.evaluation import evaluate_report, format_report
from runners.common.export import export_policy
from runners.common.run_spec import (
    TrainConfig,
    build_agent,
    env_kwargs,
    init_tracking,
    make_envs,
)


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


