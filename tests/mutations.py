"""Mutation check: plant classic RL bugs one at a time and see which fast tests catch each.

    python tests/mutations.py                      # every mutation (~30-60 s each on 2 idle cores)
    python tests/mutations.py --only entropy_sign no_policy_gradient
    python tests/mutations.py --list

For every mutation the repository (tracked and untracked, non-ignored files) is copied to a
temporary directory, ONE source edit is applied there (its exact text must occur, so a refactor
that moves the code makes the script fail loudly instead of silently testing nothing), and the
mutation's fast tests run in the copy (``PYTHONPATH`` = the copy, one thread). A mutation is
caught when at least one test fails; the script prints each mutation with its failing tests
and exits with status 1 if any mutation survives. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = ["tests/agents/test_update_gradients.py", "tests/agents/test_reinforce_unbiased.py", "tests/agents/test_sampling.py",
        "tests/agents/test_returns.py"]  # seconds each; --tests-also adds more (e.g. tests/agents/test_agent.py)
ONE_PASS = ["tests/agents/test_one_pass_reference.py", "tests/envs/test_textgen_one_pass.py"]
LM_MATRIX = ["tests/envs/test_lm_architectures.py", "tests/agents/test_lm_matrix.py"]
TEXT = ["tests/agents/test_text_agent.py", "tests/envs/test_textgen.py", "tests/envs/test_textgen_vector.py"]
GROUP = ["tests/agents/test_estimators.py", "tests/agents/test_update_gradients.py",
         "tests/agents/test_group_agent.py::test_every_finished_episode_enters_the_loss_once_with_its_complete_group",
         "tests/agents/test_group_agent.py::test_collector_group_ids_are_the_eth_episode_of_each_row_of_a_block_on_catgrid"]

DDP_EQUIVALENCE = "tests/runners/test_distributed.py::test_two_ranks_on_two_halves_take_the_step_of_one_process_on_the_whole_batch"


@dataclass
class Mutation:
    name: str
    bug: str
    path: str
    old: str
    new: str
    tests: list[str]
    count: int = 1  # occurrences of ``old`` that must exist (all are replaced)


MUTATIONS = [
    Mutation("reset_steps_in_ppo_loss", "reset steps (NEXT_STEP autoreset) not masked out of the PPO loss",
             "agents/estimators.py", "return Advantages(adv, targets, ro.valid)",
             "return Advantages(adv, targets, torch.ones_like(ro.valid))",
             GRID),
    Mutation("adv_norm_over_masked_steps", "advantage normalisation computed over masked steps too",
             "agents/agent.py", "fb.adv[fb.mask] = normalize(fb.adv[fb.mask], center=how == \"whiten\")",
             "fb.adv = normalize(fb.adv, center=how == \"whiten\")", GRID),
    Mutation("old_logprobs_recomputed", "old log-probs recomputed at update time (ratio always 1)",
             "agents/agent.py", "old_logprob=fb.old_logprob[idx][m]", "old_logprob=logprob.detach()", GRID),
    Mutation("entropy_sign", "entropy bonus sign flipped",
             "agents/objective.py", "loss = pg_loss - c.ent_coef * m.entropy", "loss = pg_loss + c.ent_coef * m.entropy",
             GRID),
    Mutation("baseline_grad_in_policy_loss", "REINFORCE baseline's gradient flowing into the policy loss",
             "agents/objective.py", "pg_loss = losses.reinforce_loss(m.logprob, m.adv, m.weights)",
             "pg_loss = -(m.logprob * (m.targets - m.values)).mean()", GRID),
    Mutation("reinforce_loss_not_detached", "reinforce_loss lets gradient into its weights Ψ (e.g. a baseline)",
             "agents/losses.py", "-aggregate(logprob * advantages.detach(), weights)",
             "-aggregate(logprob * advantages, weights)", GRID),
    Mutation("kl_penalty_on_last_token", "all per-token KL penalty moved to the last token (episode sum unchanged)",
             "agents/rollout.py", "reward = reward - beta * logp * self.valid",
             "self._kl_sum = getattr(self, '_kl_sum', 0.0) + beta * logp * self.valid; "
             "_end = np.logical_or(term, trunc) & self.valid; "
             "reward = np.where(_end, reward - self._kl_sum, reward); "
             "self._kl_sum = np.where(_end | ~self.valid, 0.0, self._kl_sum)", TEXT),
    Mutation("value_targets_from_normalised_adv", "value targets built from normalised advantages",
             "agents/agent.py", "        per_minibatch = self._normalize_advantages(fb)\n",
             "        per_minibatch = self._normalize_advantages(fb)\n        fb.targets = fb.adv + fb.old_values\n", GRID),
    Mutation("reinforce_unfinished_steps", "REINFORCE keeping steps of unfinished episodes with truncated returns",
             "agents/estimators.py", "mask = ro.valid & complete_episode_mask(\n        ro.terminated",
             "mask = ro.valid | complete_episode_mask(\n        ro.terminated", GRID),
    Mutation("no_policy_gradient", "no policy gradient at all (policy loss multiplied by 0)",
             "agents/objective.py", "loss = pg_loss - c.ent_coef * m.entropy",
             "loss = 0.0 * pg_loss - c.ent_coef * m.entropy",
             GRID + ["tests/agents/test_text_agent.py"]),
    # the defects of issue #7 itself
    Mutation("reinforce_drops_unfinished_episodes", "REINFORCE drops (does not carry) unfinished episodes: biased",
             "agents/agent.py", "ro = prepend(self.carry, ro)", "ro = ro", GRID),
    Mutation("reinforce_mean_over_learned_steps", "REINFORCE divides by the (action-dependent) learned step count",
             "agents/agent.py", "        if how == \"constant\":\n            return rollout_steps\n",
             "        if how == \"constant\":\n            return fb.mask.sum()\n", GRID),
    # the defects of "RLOO and GRPO done right"
    Mutation("group_learned_before_complete", "a group learned as soon as 2 of its episodes have finished (the rest "
             "later, alone or in another group): groups depend on the episode lengths",
             "agents/estimators.py", "    return count == ro.group_size\n", "    return count >= 2\n", GROUP),
    Mutation("group_waiting_episodes_dropped", "finished episodes whose group-mates still run are dropped, not carried",
             "agents/agent.py", "self.carry = unfinished_tail(ro, est.carry)", "self.carry = unfinished_tail(ro)",
             GROUP),
    Mutation("catgrid_groups_without_lockstep", "a row that finished its episode of the block's group plays it again "
             "(no idle wait): groups hold several episodes of the fast rows", "agents/group_ids.py",
             "play = start & ~self.played", "play = start", GROUP),
    Mutation("text_groups_by_row", "text groups formed by row instead of by shared prompt (env group ids ignored)",
             "agents/rollout.py", "self.group = np.where(info[\"_group_id\"], np.asarray(info[\"group_id\"], "
             "dtype=np.int64), self.group)", "self.group = np.arange(self.num_envs, dtype=np.int64)",
             ["tests/agents/test_group_agent.py::test_text_groups_and_kl_mode"]),
    Mutation("skipped_update_not_counted", "an update with nothing to learn does not advance num_updates (resume "
             "restarts from it)", "agents/agent.py",
             "            self.num_updates += 1\n            return {\"skipped\"", "            return {\"skipped\"",
             ["tests/runners/test_group_resume.py"]),
    Mutation("rloo_mean_over_learned_steps", "RLOO divides by the (action-dependent) learned step count",
             "agents/algos.py", "trains_value=lambda c: False, normalize=\"scale\",\n                     "
             "loss_aggregation=\"constant\"", "trains_value=lambda c: False, normalize=\"scale\",\n"
             "                     loss_aggregation=\"token_mean\"", GROUP),
    Mutation("kl_in_reward_and_loss", "kl_mode='loss' also keeps the per-token KL penalty in the reward (twice)",
             "agents/rollout.py", "            reward = reward - beta * ref\n",
             "            reward = reward - beta * ref - beta * (logp - ref) * self.valid\n",
             ["tests/agents/test_group_agent.py::test_text_groups_and_kl_mode"]),
    Mutation("grpo_ratio_always_one", "GRPO's old log-probs taken from the current policy (ratio always 1)",
             "agents/agent.py", "old_logprob=fb.old_logprob[idx][m]", "old_logprob=logprob.detach()",
             ["tests/agents/test_update_gradients.py::test_grpo_gradient_matches_a_step_by_step_loss"]),
    Mutation("k3_on_old_logprobs", "the k3 KL term evaluated on the old log-probs (no gradient)",
             "agents/objective.py", "losses.kl_estimate(m.logprob, m.ref_logprob, c.kl_estimator)",
             "losses.kl_estimate(m.old_logprob, m.ref_logprob, c.kl_estimator)",
             ["tests/agents/test_update_gradients.py::test_grpo_gradient_matches_a_step_by_step_loss"]),
    Mutation("minibatch_split_per_rank", "each rank draws its own minibatch split (two processes of N/2 envs then "
             "take another step than one of N envs)", "agents/batch.py",
             "order = parallel.broadcast(torch.randperm(total, device=learn_chunks.device))",
             "order = torch.randperm(total, device=learn_chunks.device)", [DDP_EQUIVALENCE]),
    Mutation("empty_minibatch_drops_constant_denominator", "a rank without steps in a minibatch weighs its "
             "(constant-denominator) gradient 0 in the all-reduce", "agents/agent.py",
             "torch.zeros((), device=self.device) if denom is None else denom", "torch.zeros((), device=self.device)",
             [DDP_EQUIVALENCE]),
    Mutation("dropout_left_on", "dropout left on in the policy (PPO ratio ≠ 1 at θ = θ_old)",
             "agents/networks.py", "    configs: list[Any] = []\n", "    return module\n    configs: list[Any] = []\n", TEXT),
    Mutation("ref_logprob_only_with_kl", "reference log-prob reported only when kl_coef > 0 (KL logged wrong at β=0)",
             "envs/textgen_core.py", "info[\"ref_logprob\"], info[\"_ref_logprob\"] = ref_logp, active.copy()",
             "if beta > 0: info[\"ref_logprob\"], info[\"_ref_logprob\"] = ref_logp, active.copy()", TEXT),
    Mutation("policy_kl_reward_unmasked", "the LM-policy KL wrapper's log π_θ ignores the action mask",
             "envs/interop/kl_reward.py", "            if self._allowed is not None:", "            if False:",
             ["tests/envs/test_interop_kl.py"]),
    Mutation("partial_restart_overwrites_last_column", "a partial KV-cache restart ends on the column the next "
             "decode writes (the prompt's last token is overwritten)", "envs/partial_restart.py",
             "        cache.col = (cache.col - 1) % cache.capacity  # the contexts end on the last written column\n"
             "        hidden = lm._restart_rows(rows, ids, mask)\n"
             "        cache.col = (cache.col + 1) % cache.capacity\n",
             "        hidden = lm._restart_rows(rows, ids, mask)\n", ["tests/envs/test_autoreset_modes.py"]),
    Mutation("float32_cdf_sampling", "sampling from a float32 CDF (tail tokens never drawn)",
             "agents/sampling.py", "cdf = logp.exp().double().cumsum_(-1)", "cdf = logp.exp().cumsum_(-1).double()",
             GRID),
    Mutation("stale_end_artefact_kept", "an end-of-run artefact of an earlier end counted as done after resuming",
             "runners/common/end_of_run.py", 'return (ledger.get("global_step") == global_step and step.name',
             "return (step.name", ["tests/runners/test_end_of_run.py"]),
    Mutation("finished_run_not_repaired", "--resume of a finished run skips the missing end-of-run steps",
             "runners/common/end_of_run.py", "return [s for s in steps if s.applies(cfg, state) and not",
             "return [s for s in steps if False and not", ["tests/runners/test_end_of_run.py"]),
    Mutation("resume_options_unchecked", "options changed on --resume silently accepted",
             "runners/common/run_dir.py", "if key not in RESUME_MAY_CHANGE and", "if False and",
             ["tests/runners/test_edges.py"]),
    Mutation("optimizer_shapes_unchecked", "an optimizer moment of the wrong shape accepted",
             "runners/common/checkpoint_schema.py", "if value.shape != param.shape or value.dtype != param.dtype:",
             "if False:", ["tests/runners/test_edges.py"]),
    Mutation("checkpoint_link_followed", "a checkpoint symlink leaving its run directory followed",
             "runners/common/checkpoint.py", "if path.is_symlink() and path.resolve().parent != path.parent.resolve():",
             "if False:", ["tests/runners/test_edges.py"]),
    Mutation("one_pass_refs_one_step_early", "one-pass reference log-probs placed one step before their tokens",
             "agents/ref_tokens.py", "steps = slice(t + 1 - lp.size, t + 1)", "steps = slice(t - lp.size, t)",
             ONE_PASS),
    Mutation("one_pass_eos_not_renormalised", "one-pass reference ignores the EOS mask of min_new_tokens",
             "envs/lm/scoring.py", "blocked = (before >= 0) & (before < min_new_tokens)",
             "blocked = (before >= 0) & (before < 0)", ONE_PASS),
    Mutation("logit_softcap_skipped", "the LM's logit post-processing (Gemma 2 soft-capping) skipped",
             "envs/lm/logits.py", "        if self.softcap is not None:\n", "        if False:\n", LM_MATRIX),
    Mutation("policy_logits_postprocessing_skipped", "the policy applies only the LM head (no scaling/soft-cap)",
             "agents/networks.py", "logits = self.logits_head.post(self.policy_head(hidden))",
             "logits = self.policy_head(hidden)", LM_MATRIX),
    Mutation("sliding_window_ignored", "one full-causal mask for sliding-window layers (Mistral, Gemma 2/3)",
             "envs/lm/logits.py", "    if window is None:\n        return additive(model, mask4)",
             "    if True:\n        return additive(model, mask4)", LM_MATRIX),
    Mutation("only_tokenizer_eos_ends", "only the tokenizer's EOS ends an episode (other generation_config ids not)",
             "envs/textgen_rows.py", "np.isin(actions, self.eos_token_ids)", "(actions == self.eos_token_id)",
             ["tests/envs/test_length.py"]),
    Mutation("lora_reference_keeps_adapter", "a LoRA policy's reference runs with the adapter on (KL always 0)",
             "envs/textgen_core.py", "autocast_dtype=self.autocast_dtype, reference=True)",
             "autocast_dtype=self.autocast_dtype, reference=False)", ["tests/agents/test_lora.py"]),
    Mutation("export_not_reloaded", "an export is not reloaded and compared before it is put in place",
             "runners/common/export.py", "            _check_reload(net, directory, as_adapter)\n", "",
             ["tests/agents/test_lora.py"]),
    Mutation("update_ignores_temperature", "the update evaluates the untempered policy (rollout sampled at T != 1)",
             "agents/agent.py", "if self.config.temperature != 1.0:  # the tempered", "if False:  # the tempered",
             ["tests/agents/test_text_agent.py"]),
    Mutation("top_k_set_not_stored", "the rollout stores the env's mask, not the top-k/top-p kept set",
             "agents/rollout.py", "buf.masks.append(step_mask)", "buf.masks.append(self.mask)",
             ["tests/agents/test_text_agent.py"]),
    Mutation("micro_batch_mean_terms_unscaled", "micro-batches add their value losses unscaled (not their share)",
             "agents/objective.py", "clip_v) * m.share", "clip_v)", ["tests/agents/test_micro_batch.py"]),
    Mutation("micro_batch_mean_per_pass", "micro-batches sum their steps instead of averaging over the minibatch",
             "agents/agent.py", "weights = torch.full_like(adv, 1.0) / n_group", "weights = torch.full_like(adv, 1.0)",
             ["tests/agents/test_micro_batch.py"]),
    Mutation("grad_scaler_clips_scaled_gradients", "float16: the scaled gradients are clipped (not unscaled first)",
             "agents/agent.py", "        self.scaler.unscale_(self.optimizer)\n", "", ["tests/agents/test_grad_scaler.py"]),
    Mutation("lora_checkpoint_holds_the_base", "a LoRA run's checkpoint holds the whole network, frozen base included",
             "runners/common/checkpoint.py", 'if getattr(agent.net, "peft", None) is None:', "if True:",
             ["tests/runners/test_models.py::test_lora_run_resumes_exactly_and_exports"]),
    Mutation("reference_on_the_env_device", "the reference model is loaded on the env's device, not ref_device",
             "envs/textgen_core.py", "reference_model(model, tokenizer, ref_model, self.ref_device,",
             "reference_model(model, tokenizer, ref_model, self.device,", ["tests/envs/test_model_devices.py"]),
    Mutation("reward_columns_misaligned", "TextGen-v0 passes the dataset columns of other rows to the reward",
             "envs/textgen_general.py", "for i in picks] for c in self.columns}", "for i in picks[::-1]] for c in self.columns}",
             ["tests/envs/test_textgen_general.py"]),
    Mutation("reward_moments_not_resumed", "a resumed reward_norm run restarts its running reward moments",
             "runners/common/checkpoint.py", 'if agent.reward_moments is None or "reward_moments" not in state:',
             "if True:", ["tests/runners/test_checkpoint.py::test_running_reward_norm_resumes_exactly_from_its_saved_moments"]),
    Mutation("reward_moments_updated_after_scaling", "the running reward moments leave out the rollout they scale",
             "agents/reward_scaling.py", "        self.update(rewards, valid)\n        out = rewards.clone()",
             "        out = rewards.clone()", ["tests/agents/test_reward_scaling.py"]),
    Mutation("grouped_prefill_wrong_columns", "a length group's prefill written to the first columns of the ring",
             "envs/lm/kv_cache.py", "torch.arange(width - w, width,", "torch.arange(0, w,", ["tests/envs/test_kv_cache.py"]),
    Mutation("last_step_bootstrap_values_kept", "rows starting an episode after the last step keep a garbage value",
             "agents/bootstrap.py", "return logits, values.masked_fill(starts, 0.0)", "return logits, values",
             ["tests/agents/test_text_agent.py"]),
    Mutation("rebn_episode_return", "ReBN normalises the whole-episode return G_0 instead of the reward-to-go G_t",
             "agents/estimators.py", "ret = rewards_to_go(ro.rewards, ro.terminated, ro.truncated, c.gamma)  # (T, N)",
             "ret = episode_returns(ro.rewards, ro.terminated, ro.truncated, ro.episode_start, c.gamma)  # (T, N)",
             ["tests/agents/test_estimators.py"]),
    Mutation("catgrid_turn_no_move_free", "a CatGrid turn naming no move is not penalised",
             "envs/catgrid_turns.py", "reward, terminated = self.invalid_penalty, False", "reward, terminated = 0.0, False",
             ["tests/envs/test_catgrid_turns.py"]),
    Mutation("catgrid_turn_last_move_word", "the CatGrid turn's last move word counts instead of its first",
             "envs/catgrid_turns.py", "found = _MOVE_RE.search(text)", "found = ([None, *_MOVE_RE.finditer(text)])[-1]",
             ["tests/envs/test_catgrid_turns.py"]),
    Mutation("rebn_stats_over_masked_steps", "ReBN's batch mean and std include reset steps and unfinished episodes",
             "agents/estimators.py", "sel = ret[mask].double()  # (M,)", "sel = ret.flatten().double()  # (M,)",
             ["tests/agents/test_estimators.py"]),
    Mutation("turn_step_reads_action_position", "the update reads a multi-turn step at its action's position, not before it",
             "agents/turn_policy.py", "before = desc[chunk, k.clamp(max=W - 1)] - 1", "before = desc[chunk, k.clamp(max=W - 1)]",
             ["tests/agents/test_turn_policy.py"]),
    Mutation("turn_act_feeds_last_token_only", "the multi-turn policy feeds only the last id, not the env turn before it",
             "agents/turn_policy.py", "counts = np.where(restart, real, real - cached)", "counts = np.where(restart, real, 1)",
             ["tests/agents/test_turn_policy.py"]),
    Mutation("turn_ref_skips_env_tokens", "the reference's KV cache is not fed the env's turn",
             "envs/turn_core.py", "False, False, True, False, new + ids", "False, False, True, False, new",
             ["tests/envs/test_turn_env.py"]),
    Mutation("history_obs_stores_chunk_first", "LM rollouts store each chunk's first observation instead of its last",
             "agents/history_obs.py", "self.parts.append({k: np.asarray(v)[rows] for k, v in obs.items()})",
             "first, starts = getattr(self, 'first', None), getattr(self, 'ended', np.ones_like(ends))\n"
             "        self.first = {k: np.where(starts[:, None], np.asarray(v), first[k]) if first else np.asarray(v).copy()\n"
             "                      for k, v in obs.items()}\n"
             "        self.ended = ends\n"
             "        self.parts.append({k: v[rows] for k, v in self.first.items()})",
             ["tests/agents/test_history_obs.py", "tests/agents/test_turn_policy.py"]),
]


def imdb_dir() -> Path:
    """The IMDB copy the repository itself would use (the copy lives elsewhere, so pass it on)."""
    sys.path.insert(0, str(ROOT))
    from envs.imdb import default_imdb_dir

    return default_imdb_dir().resolve()


def repo_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def run(m: Mutation, files: list[str], extra: list[str], timeout: float) -> tuple[list[str], float]:
    """Failing test ids of the fast tests with mutation ``m`` planted (empty: the mutation survived)."""
    with tempfile.TemporaryDirectory(prefix=f"mut_{m.name}_") as tmp:
        for f in files:
            (Path(tmp) / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, Path(tmp) / f)
        target = Path(tmp) / m.path
        text = target.read_text()
        if text.count(m.old) != m.count:
            raise SystemExit(f"{m.name}: expected {m.count} occurrence(s) of {m.old!r} in {m.path}, found "
                             f"{text.count(m.old)}; update tests/mutations.py to the current code")
        target.write_text(text.replace(m.old, m.new))
        env = {**os.environ, "PYTHONPATH": tmp, "OMP_NUM_THREADS": "1", "RLHF_IMDB_DIR": str(imdb_dir())}
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-m", "not slow",
               *m.tests, *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
        if proc.returncode not in (0, 1) and not failed:
            raise SystemExit(f"{m.name}: pytest exited {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return failed, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutation names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutation")
    parser.add_argument("--tests-also", nargs="*", default=[], help="more test files to run for every mutation")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:36s} {m.bug}")
        return
    unknown = set(args.only or []) - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(f"unknown mutations {sorted(unknown)}; see --list")
    files = repo_files()
    survived = []
    for m in chosen:
        failed, secs = run(m, files, [*args.tests_also, *args.pytest_args], args.timeout)
        status = "caught" if failed else "SURVIVED"
        print(f"[{status}] {m.name} ({secs:.0f}s): {m.bug}", flush=True)
        for test in failed:
            print(f"    {test}", flush=True)
        if not failed:
            survived.append(m.name)
    if survived:
        print(f"{len(survived)} mutation(s) survived: {', '.join(survived)}")
        sys.exit(1)
    print(f"all {len(chosen)} mutations caught")


if __name__ == "__main__":
    main()
