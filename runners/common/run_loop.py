"""The training loop of ``runners.train``, CleanRL-style: :func:`build_run` sets up a :class:`Run` (run directory,
vector env, agent, rollout collector, TensorBoard writer, KL controller, progress bar), :func:`iteration` is one
rollout and update, :func:`finish` runs the end-of-run steps (:data:`END_STEPS`: export, evaluation) and closes.
:func:`train` runs a :class:`~runners.common.run_spec.TrainConfig` from a fresh or resumed run directory through all
three; ``--resume`` of a finished run writes the end-of-run artefacts a crash left missing
(:mod:`runners.common.end_of_run`).

The order of every RNG draw and side effect is part of the contract: a stopped-and-resumed run must end
bit-identical to an uninterrupted one (:mod:`runners.common.resume`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

import envs as _registered_envs  # noqa: F401  (registers the environments)
from agents.agent import Agent
from agents.env_access import env_attr
from agents.kl import AdaptiveKLController
from agents.networks import CausalLMPolicy
from agents.rollout import EpisodeLog, RolloutCollector
from runners.common import checkpoint_schema as schema
from runners.common import cli, distributed, end_of_run
from runners.common import logs as logging_utils
from runners.common import resume as exact_resume
from runners.common import run_dir as runs
from runners.common.atomic import check_writable, crash_point
from runners.common.checkpoint import (
    POINTER,
    load_checkpoint,
    load_resume_state,
    read_state,
    recover,
    run_dir_of,
    save_checkpoint,
)
from runners.common.end_of_run import EndStep, write_json_atomic
from runners.common.evaluation import evaluate_report, format_report
from runners.common.export import POLICY_DIR, VALUE_HEAD_FILE, export_policy
from runners.common.pretrained import recover_pretrained_dir
from runners.common.run_spec import TrainConfig, build_agent, env_kwargs, init_tracking, make_envs, with_lora
from runners.common.text_eval import evaluate_text, format_text_report


@dataclass
class Run:
    """A training run in progress: everything :func:`iteration` and :func:`finish` use."""

    cfg: TrainConfig
    env_overrides: dict[str, Any] | None
    run_dir: Path
    rank: int
    world: int
    recorded: dict[str, Any]  # the config as saved in checkpoints
    envs: gym.vector.VectorEnv
    agent: Agent
    collector: RolloutCollector
    writer: Any  # SummaryWriter on rank 0, distributed.NullWriter elsewhere
    tracker: Any  # the Weights & Biases run (--track) or None
    kl_ctl: AdaptiveKLController | None  # adaptive β; None: fixed β or no KL shaping
    bar: tqdm
    start_update: int
    t0: float = field(default_factory=time.time)
    steps0: int = 0  # env steps done before this process started
    recent: dict[str, list[float]] = field(default_factory=lambda: {"return": [], "score": [], "kl": []})
    stopped_early: str | None = None

    @property
    def main_rank(self) -> bool:
        """The one rank that writes logs, checkpoints and the evaluation."""
        return self.rank == 0


def train(cfg: TrainConfig, env_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run training; returns final statistics (and the evaluation report when enabled).

    ``env_overrides`` (programmatic use) replaces env kwargs with objects, e.g.
    ``{"reward_model": my_callable}`` or ``{"model": model, "tokenizer": tok}``; a model
    object given there is also the policy's starting point (deep-copied).
    """
    dist_info = _start_process(cfg, env_overrides)
    run_dir, resume_state = _open_run_dir(cfg, dist_info.rank == 0)
    if resume_state is not None:
        runs.check_resume_options(run_dir, runs.recorded_config(cfg.saved(), env_overrides), resume_state["config"],
                                  dataclasses.asdict(TrainConfig()))
        done = runs.finished_message(run_dir, resume_state, cfg.num_updates)
        if done is not None:
            missing = end_of_run.pending(END_STEPS, cfg, run_dir, resume_state)
            if not missing:
                print(done, file=sys.stderr)
                return {"run_dir": str(run_dir), "global_step": resume_state["global_step"], "finished": True}
            print(f"run {run_dir} finished training but its end was interrupted; writing what is missing: "
                  + ", ".join(s.name for s in missing), file=sys.stderr)
            result = finish(build_run(cfg, env_overrides, run_dir, resume_state, dist_info))
            print(done, file=sys.stderr)
            return result | {"finished": True}
    run = build_run(cfg, env_overrides, run_dir, resume_state, dist_info)
    for update in range(run.start_update, cfg.num_updates):
        run.stopped_early = _stop_early(run, update)
        if run.stopped_early is not None:
            break
        iteration(run, update)
    return finish(run)


def _start_process(cfg: TrainConfig, env_overrides: dict[str, Any] | None) -> distributed.DistInfo:
    """Process-wide settings: threads, the process group (a no-op without torchrun), the initial-weight seeds."""
    cli.quiet_transformers()
    runs.check_reloadable(cfg, env_overrides)
    distributed.check_devices(device=cfg.device, ref_device=cfg.ref_device, reward_device=cfg.reward_device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info = distributed.init_distributed(cfg.device, cfg.dist_timeout)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (rank 0's are broadcast anyway)
    np.random.seed(cfg.seed)
    return dist_info


def _open_run_dir(cfg: TrainConfig, main_rank: bool) -> tuple[Path, dict[str, Any] | None]:
    """The run directory and, on --resume, the state of its newest complete checkpoint (recovered first)."""
    if not cfg.resume:
        run_dir = None
        with distributed.agree_on_errors("choosing the run directory"):
            if main_rank:
                default = f"{cfg.env}__{cfg.algo}__{cfg.seed}__{int(time.time())}"
                run_dir = runs.new_run_dir(cfg.log_dir, cfg.run_name, default)
        return distributed.broadcast_object(run_dir), None  # rank 0 names the run
    run_dir = run_dir_of(cfg.resume)
    found = None
    with distributed.agree_on_errors("recovering the checkpoint"):
        if main_rank:  # leftovers of an interrupted save are cleaned up by the one writer
            found = recover(run_dir / POINTER) is not None
    if not distributed.broadcast_object(found):
        raise FileNotFoundError(f"{run_dir} holds no complete checkpoint to resume from")
    return run_dir, read_state(run_dir / POINTER)


def _load_agent(cfg: TrainConfig, envs: gym.vector.VectorEnv, run_dir: Path, resume_state: dict[str, Any] | None,
                world: int, model: Any) -> tuple[Agent, int, int]:
    """The agent (from the checkpoint on --resume), the env steps and the updates it has done."""
    agent = build_agent(cfg, envs, total_updates=cfg.num_updates, model=model)
    if resume_state is None:
        return agent, 0, 0
    load_checkpoint(run_dir / POINTER, agent, reset_optimizer=cfg.reset_optimizer)
    if resume_state.get("world_size", 1) != world:
        raise ValueError(f"{run_dir} was trained by {resume_state.get('world_size', 1)} process(es), this job has "
                         f"{world}: resume with the same number (torchrun --nproc-per-node/--nnodes)")
    exact_resume.set_lr_schedule(agent, cfg, resume_state)
    return agent, resume_state["global_step"], agent.num_updates


def _open_writer(cfg: TrainConfig, run_dir: Path, recorded: dict[str, Any], resume_state: dict[str, Any] | None,
                 global_step: int, main_rank: bool) -> tuple[Any, Any]:
    """The W&B run (--track, started first) and the TensorBoard writer of rank 0 (a no-op writer elsewhere)."""
    tracker = init_tracking(cfg, run_dir, recorded) if cfg.track and main_rank else None
    # a crashed run may have logged past its last checkpoint: TensorBoard drops those steps
    purge = global_step + 1 if resume_state is not None else None
    writer = SummaryWriter(str(run_dir), purge_step=purge) if main_rank else distributed.NullWriter()
    if resume_state is None:
        writer.add_text("config", logging_utils.config_table(recorded))
    return tracker, writer


def _collector(cfg: TrainConfig, envs: gym.vector.VectorEnv, agent: Agent, run_dir: Path,
               resume_state: dict[str, Any] | None, global_step: int, start_update: int,
               dist_info: distributed.DistInfo) -> tuple[RolloutCollector, AdaptiveKLController | None]:
    """The rollout collector, the one owner of β (an adaptive β continues from the checkpoint's), and its KL
    controller; on a one-process resume, the RNG, env and collector state of the checkpoint restored."""
    rank, world = dist_info.rank, dist_info.world_size
    beta = resume_state.get("kl_coef", cfg.kl_coef) if resume_state else cfg.kl_coef
    # rank r's sub-envs get the seeds one process with ranks x num_envs envs would give them
    env_seed = cfg.seed + start_update + rank * cfg.num_envs
    collector = RolloutCollector(envs, agent, cfg.num_steps, cfg.reward_scale, seed=env_seed, group_size=cfg.group_size,
                                 kl_coef=beta if cfg.adaptive_kl else None)
    kl_ctl = AdaptiveKLController(beta, cfg.kl_target, cfg.kl_horizon) if (
        cfg.adaptive_kl and collector.kl_coef is not None) else None
    collector.global_step = global_step
    if resume_state is not None and world == 1:  # RNG/env/collector state of the one process
        exact_resume.restore(envs, collector, load_resume_state(run_dir / POINTER))
    return collector, kl_ctl


def build_run(cfg: TrainConfig, env_overrides: dict[str, Any] | None, run_dir: Path,
              resume_state: dict[str, Any] | None, dist_info: distributed.DistInfo) -> Run:
    """Everything a run needs, in the order the RNG streams and files expect (see the module docstring)."""
    rank, world = dist_info.rank, dist_info.world_size
    if rank == 0:
        check_writable(run_dir, "run")
    recorded = runs.recorded_config(cfg.saved(), env_overrides)
    env_overrides = with_lora(cfg, env_overrides)  # --lora-r: one PeftModel for the env and the agent
    envs = make_envs(cfg, overrides=env_overrides)
    agent, global_step, start_update = _load_agent(cfg, envs, run_dir, resume_state, world,
                                                   (env_overrides or {}).get("model"))
    distributed.broadcast_module(agent.net)  # every rank starts from rank 0's weights
    if world > 1:  # each rank samples its own actions
        torch.manual_seed(cfg.seed + rank)
        np.random.seed(cfg.seed + rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker, writer = _open_writer(cfg, run_dir, recorded, resume_state, global_step, rank == 0)
    collector, kl_ctl = _collector(cfg, envs, agent, run_dir, resume_state, global_step, start_update, dist_info)
    t0 = time.time()
    if cfg.progress and rank == 0:
        print(f"run directory: {run_dir}  (tensorboard --logdir {run_dir.parent})", file=sys.stderr)
    bar = tqdm(total=cfg.num_updates * cfg.num_envs * cfg.num_steps * world, initial=global_step,
               disable=not (cfg.progress and rank == 0), desc=run_dir.name, unit="step", unit_scale=True,
               dynamic_ncols=True)
    return Run(cfg, env_overrides, run_dir, rank, world, recorded, envs, agent, collector, writer, tracker, kl_ctl,
               bar, start_update, t0=t0, steps0=global_step)


def save(run: Run, step: int) -> None:
    """A checkpoint of the run at env step ``step`` (rank 0 only), with the exact-resume state of one process."""
    if not run.main_rank:
        return
    run.writer.flush()  # what TensorBoard holds up to this step survives a crash after the checkpoint
    save_checkpoint(run.run_dir / POINTER, run.agent, run.recorded, step, keep=run.cfg.keep_checkpoints,
                    resume_state=exact_resume.capture(run.envs, run.collector) if run.world == 1 else None,
                    lr_schedule=exact_resume.lr_schedule(run.agent), world_size=run.world,
                    **({"kl_coef": run.kl_ctl.value} if run.kl_ctl else {}))


def _stop_early(run: Run, update: int) -> str | None:
    """Why the run stops before ``update`` (the wall-clock cap, with a checkpoint; --stop-at-update), or None."""
    cfg = run.cfg
    if cfg.max_minutes is not None and distributed.any_rank(time.time() - run.t0 > cfg.max_minutes * 60):
        reason = (f"wall-clock cap of {cfg.max_minutes} min reached after {update} of {cfg.num_updates} "
                  "updates; this is NOT the configured run")
        print(f"WARNING: {reason}", file=sys.stderr, flush=True)
        save(run, run.collector.global_step)
        return reason
    if cfg.stop_at_update is not None and update >= cfg.stop_at_update:
        reason = f"stopped at update {update} of {cfg.num_updates} (--stop-at-update)"
        print(f"{reason}; continue with --resume {run.run_dir}", file=sys.stderr, flush=True)
        return reason
    return None


def _log_kl(run: Run, log: EpisodeLog, step: int) -> None:
    """The adaptive β's update from this rollout's KLs (handed to the collector) and the β to TensorBoard."""
    if run.kl_ctl is not None:
        if log.kls:
            run.collector.set_kl_coef(run.kl_ctl.update(float(np.mean(log.kls)), len(log.kls)))
        run.writer.add_scalar("objective/kl_coef", run.kl_ctl.value, step)
    elif log.kls:  # fixed β
        run.writer.add_scalar("objective/kl_coef", run.cfg.kl_coef, step)


class NonFiniteError(FloatingPointError):
    """The policy's losses or weights became NaN or inf: training stops before the bad weights are saved."""


def _non_finite_error(run: Run, update: int, found: list[str]) -> NonFiniteError:
    ckpt = (run.run_dir / POINTER).resolve() if (run.run_dir / POINTER).exists() else None
    kept = f"the last good checkpoint {ckpt} is kept" if ckpt else "no checkpoint was written yet"
    return NonFiniteError(
        f"the policy produced non-finite values at update {update + 1} ({'; '.join(found)}): training stopped and "
        f"{kept}. The run diverged: start a new run with a lower --agent.learning-rate (or "
        "--agent.max-grad-norm).")


def _probe_logits(run: Run) -> str | None:
    """After a failure: do the policy's logits and values at the current observations hold NaN or inf?"""
    try:
        logits, values = run.agent.policy_step(run.collector.obs, np.ones(run.cfg.num_envs, dtype=bool))
    except Exception:  # noqa: BLE001  (the original error is the one to report)
        return None
    if bool(torch.isfinite(logits).all()) and bool(torch.isfinite(values).all()):
        return None
    return "the logits or values at the current observations are NaN or inf"


@contextmanager
def _finite(run: Run, update: int, check_after: bool = False) -> Iterator[None]:
    """Stops with :class:`NonFiniteError` when the block fails on NaN/inf weights or logits (torch's sampler and
    distributions fail on NaN logits with messages that do not say so) or, ``check_after``, leaves NaN weights."""
    try:
        yield
    except (ValueError, IndexError, RuntimeError) as e:
        bad = schema.non_finite(run.agent.net) or _probe_logits(run)
        if bad is None:
            raise
        raise _non_finite_error(run, update, [bad, f"{type(e).__name__}: {str(e).splitlines()[0]}"]) from None
    bad = schema.non_finite(run.agent.net) if check_after else None
    if bad is not None:
        raise _non_finite_error(run, update, [bad])


def iteration(run: Run, update: int) -> None:
    """One rollout and update: logs, the KL controller, the progress bar and the periodic checkpoint."""
    cfg, collector = run.cfg, run.collector
    with distributed.agree_on_errors("the rollout"), _finite(run, update):  # a failing rank stops every rank
        rollout, log = collector.collect()
    if run.world > 1:
        collector.global_step += (run.world - 1) * cfg.num_steps * cfg.num_envs  # global_step counts all ranks
        log = distributed.gather_lists(log)  # logs and the KL controller see the episodes of all ranks
    with _finite(run, update, check_after=True), distributed.waiting_for_peers("in the update", timeouts_only=True):
        stats = run.agent.update(rollout)  # NaN losses or gradients leave NaN weights; a frozen rank is named
    step = collector.global_step
    stats["SPS"] = (step - run.steps0) / max(time.time() - run.t0, 1e-9)
    logging_utils.log_update(run.writer, step, stats, log)
    run.recent = logging_utils.update_recent(run.recent, log)
    _log_kl(run, log, step)
    if log.texts and (update % cfg.sample_every == 0):
        run.writer.add_text("samples", logging_utils.samples_table(log), step)
    run.bar.set_postfix(logging_utils.postfix(run.recent), refresh=False)
    run.bar.update(step - run.bar.n)
    if (update + 1) % cfg.checkpoint_every == 0 or update + 1 in (cfg.num_updates, cfg.stop_at_update):
        save(run, step)


def _export(run: Run, result: dict[str, Any]) -> None:
    """The trained LM as ``<run dir>/policy`` and its value head (text runs)."""
    cfg = run.cfg
    hi = cfg.max_new_tokens_range[1] if cfg.max_new_tokens_range else cfg.max_new_tokens
    recover_pretrained_dir(run.run_dir / POLICY_DIR)  # leftovers of an export a crash interrupted
    result["policy_dir"] = str(export_policy(run.agent.net, env_attr(run.envs, "tokenizer"), run.run_dir, hi,
                                             cfg.min_new_tokens, env_attr(run.envs, "eos_token_ids"),
                                             merged=cfg.export_merged, sampling=cfg.agent.sampling))


def _final_text_eval(run: Run, result: dict[str, Any]) -> None:
    """Text runs: ``runners.evaluate``'s held-out metrics on ``eval_episodes`` test prompts, logged and saved."""
    cfg, step, overrides = run.cfg, run.collector.global_step, dict(run.env_overrides or {}, split="test")
    hi = cfg.max_new_tokens_range[1] if cfg.max_new_tokens_range else cfg.max_new_tokens
    envs = make_envs(cfg, num_envs=cfg.eval_episodes, eval_mode=True, overrides=overrides)
    with torch.no_grad():
        report = {**evaluate_text(run.agent, envs, hi, seed=10_000 + cfg.seed), "split": "test"}
    envs.close()
    print(text := format_text_report(report))
    run.writer.add_text("eval/final", text, step)
    run.writer.flush()  # the TensorBoard records are on disk before eval.json says the step is done
    crash_point("end_eval_logged")
    write_json_atomic(run.run_dir / "eval.json", report)
    result["eval"] = report


def _final_eval(run: Run, result: dict[str, Any]) -> None:
    """Greedy and sampled evaluation on fresh envs, logged, rendered and written to ``eval.json`` (rank 0)."""
    cfg, step = run.cfg, run.collector.global_step
    if cfg.env != "CatGrid-v0":
        return _final_text_eval(run, result)
    eval_envs = make_envs(cfg, eval_mode=True, overrides=run.env_overrides)
    with torch.no_grad():
        report = evaluate_report(run.agent, eval_envs, cfg.eval_episodes, cfg.agent.gamma, seed=10_000 + cfg.seed)
    eval_envs.close()
    print(format_report(report))
    logging_utils.log_eval(run.writer, step, report)
    logging_utils.log_rendered_episode(run.writer, cfg, run.agent, env_kwargs(cfg), step)
    run.writer.flush()  # the TensorBoard records are on disk before eval.json says the step is done
    crash_point("end_eval_logged")
    write_json_atomic(run.run_dir / "eval.json", report)
    result["eval"] = report


def _paused(cfg: TrainConfig, state: dict[str, Any]) -> bool:
    """Stopped by --stop-at-update before the configured end (the end-of-run evaluation waits for the end)."""
    return cfg.stop_at_update is not None and int(state["num_updates"]) < cfg.num_updates


END_STEPS = (  # in order; each idempotent, each repaired by --resume after a crash (runners.common.end_of_run)
    EndStep("export", (POLICY_DIR, VALUE_HEAD_FILE), lambda cfg, state: state["network"] == CausalLMPolicy.__name__,
            _export),
    EndStep("eval", ("eval.json",), lambda cfg, state: cfg.eval_episodes > 0 and not _paused(cfg, state),
            _final_eval),
)


def final_state(run: Run) -> dict[str, Any]:
    """What the end steps need to know of the final checkpoint (as its ``state.json`` says it)."""
    return {"global_step": run.collector.global_step, "num_updates": run.agent.num_updates,
            "network": type(run.agent.net).__name__}


def finish(run: Run) -> dict[str, Any]:
    """The result of the run: statistics and the end-of-run artefacts (:data:`END_STEPS`); closes everything."""
    result: dict[str, Any] = {"run_dir": str(run.run_dir), "global_step": run.collector.global_step,
                              "wall_time": time.time() - run.t0, "stopped_early": run.stopped_early,
                              **{f"recent_{k}": float(np.mean(v)) for k, v in run.recent.items() if v}}
    run.bar.close()
    if run.main_rank:
        end_of_run.run_steps(END_STEPS, run, result, final_state(run))
    run.envs.close()
    run.writer.close()
    if run.tracker is not None:
        run.tracker.finish()
    result["agent"] = run.agent
    return result
