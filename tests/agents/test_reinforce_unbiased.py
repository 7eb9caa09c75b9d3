"""REINFORCE is unbiased: every step of every episode is learned from exactly once.

The toy has one state and two actions, "stop" (ends the episode with reward 1) and
"continue" (reward 0). Every episode's return is 1 whatever the policy does, so the true
policy gradient is 0. Rollouts of ``T`` steps of ``N`` columns (Gymnasium NEXT_STEP
autoreset: a reset step follows every episode end) are built by hand in numpy and fed to
``Agent.update`` with learning rate 0, in order, so episodes cross rollout boundaries. The
gradient of the agent's loss w.r.t. the stop logit, averaged over many rollouts, must be 0.

A Monte-Carlo REINFORCE that drops the steps of episodes still running at the end of a
rollout keeps a step depending on its own later actions ("stop soon" steps are kept more
often) and shows a bias of about 0.04 per step toward "stop".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.agent import Agent, AgentConfig, Rollout
from agents.networks import PolicyValueNet, StepBatch

STOP, CONTINUE = 0, 1


class OneStateNet(PolicyValueNet):
    """logits = [θ, 0] (θ: logit of "stop"), V = v; the observation is ignored."""

    def __init__(self, theta: float, value: float) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(float(theta)))
        self.v = torch.nn.Parameter(torch.tensor(float(value)))

    def _out(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.stack([self.theta.expand(n), torch.zeros(n)], dim=1)  # (B, 2)
        return logits, self.v.expand(n)

    def act(self, obs, episode_start):
        return self._out(len(obs))

    def evaluate(self, batch: StepBatch):
        return self._out(batch.actions.shape[0])


def toy_rollouts(p_stop: float, value: float, T: int, N: int, K: int, seed: int) -> list[Rollout]:
    """K consecutive rollouts of the one-state toy under a fixed policy (NEXT_STEP autoreset)."""
    rng = np.random.default_rng(seed)
    logp = np.log([p_stop, 1.0 - p_stop])
    valid = np.ones(N, dtype=bool)
    start = np.ones(N, dtype=bool)
    out = []
    for _ in range(K):
        a = np.where(rng.random((T, N)) < p_stop, STOP, CONTINUE)
        term = np.zeros((T, N), dtype=bool)
        val = np.zeros((T, N), dtype=bool)
        st = np.zeros((T, N), dtype=bool)
        for t in range(T):
            val[t], st[t] = valid, start
            term[t] = valid & (a[t] == STOP)
            start = ~valid  # the step after a reset step starts an episode
            valid = ~term[t]
        out.append(Rollout(
            obs=torch.zeros((T, N, 1), dtype=torch.long),
            actions=torch.as_tensor(a),
            logprobs=torch.as_tensor(logp[a], dtype=torch.float32),
            values=torch.full((T + 1, N), value),
            rewards=torch.as_tensor(term, dtype=torch.float32),
            terminated=torch.as_tensor(term),
            truncated=torch.zeros((T, N), dtype=torch.bool),
            episode_start=torch.as_tensor(st),
            valid=torch.as_tensor(val),
        ))
    return out


@pytest.mark.parametrize("T", [2, 7])
@pytest.mark.parametrize("variant", [("episode", False), ("to_go", False), ("to_go", True)])
def test_reinforce_policy_gradient_is_unbiased_across_rollout_boundaries(variant, T):
    ret, baseline = variant
    p_stop, v0, N = 0.3, 0.5, 2048
    warmup = 24 // T  # the first rollouts start every episode at once: wait for the steady state
    K = warmup + 240 // T
    net = OneStateNet(np.log(p_stop / (1 - p_stop)), v0)
    agent = Agent(net, AgentConfig(algo="reinforce", gamma=1.0, learning_rate=0.0, reinforce_return=ret,
                                   reinforce_baseline=baseline, norm_adv=False, ent_coef=0.0,
                                   max_grad_norm=1e12, anneal_lr=False, num_minibatches=2))
    grads = []
    for k, ro in enumerate(toy_rollouts(p_stop, v0, T, N, K, seed=T)):
        agent.update(ro)
        if k >= warmup:
            grads.append(0.0 if net.theta.grad is None else -float(net.theta.grad))  # ascent direction
    grads = np.array(grads)
    se = grads.std() / np.sqrt(len(grads))
    assert 0 < se < 1.5e-3  # the test can see a bias of a few thousandths
    # an estimator that drops unfinished episodes is off by ~ +0.04 (T = 7) to +0.1 (T = 2) per step
    assert abs(grads.mean()) < max(4 * se, 2e-3), (grads.mean(), se)


def hand_rollout(rewards, actions, terminated, valid, start) -> Rollout:
    """A (T, N) rollout from nested lists (rows = time)."""
    T, N = len(rewards), len(rewards[0])
    t = lambda x, dt: torch.tensor(x, dtype=dt)  # noqa: E731
    return Rollout(obs=torch.zeros((T, N, 1), dtype=torch.long), actions=t(actions, torch.long),
                   logprobs=torch.zeros(T, N), values=torch.zeros(T + 1, N), rewards=t(rewards, torch.float32),
                   terminated=t(terminated, torch.bool), truncated=torch.zeros(T, N, dtype=torch.bool),
                   episode_start=t(start, torch.bool), valid=t(valid, torch.bool))


@pytest.mark.parametrize("ret", ["to_go", "episode"])
def test_reinforce_learns_each_step_once_with_its_full_return(ret):
    """Hand-computed: an episode crossing a rollout boundary is learned, whole, when it ends."""
    p = 0.25  # π(stop); ∇_θ log π(stop) = 1 - p, ∇_θ log π(continue) = -p
    net = OneStateNet(np.log(p / (1 - p)), 0.0)
    agent = Agent(net, AgentConfig(algo="reinforce", gamma=0.5, learning_rate=0.0, reinforce_return=ret,
                                   reinforce_baseline=False, norm_adv=False, ent_coef=0.0, max_grad_norm=1e12))
    S, C = STOP, CONTINUE
    # column 0: an episode r = 0, 1, 2 | 3 (ends), reset step, a new episode r = 5 ...
    # column 1: r = 1 (ends), reset step, an episode r = 2 | 3, 4 (ends), reset step
    ro1 = hand_rollout([[0, 1], [1, 0], [2, 2]], [[C, S], [C, C], [C, C]],
                       [[0, 1], [0, 0], [0, 0]], [[1, 1], [1, 0], [1, 1]], [[1, 1], [0, 0], [0, 1]])
    ro2 = hand_rollout([[3, 3], [0, 4], [5, 0]], [[S, C], [C, S], [C, C]],
                       [[1, 0], [0, 1], [0, 0]], [[1, 1], [0, 1], [1, 0]], [[0, 0], [0, 0], [1, 0]])
    # a collector reset: both columns start new episodes (column 0's running episode is abandoned)
    ro3 = hand_rollout([[7, 7], [0, 0], [0, 0]], [[S, S], [C, C], [C, C]],
                       [[1, 1], [0, 0], [0, 0]], [[1, 1], [0, 0], [1, 1]], [[1, 1], [0, 0], [1, 1]])
    if ret == "to_go":
        g0 = [0 + 0.5 + 0.5 + 0.375, 1 + 1 + 0.75, 2 + 1.5, 3]  # column 0's episode, G_t
        g1 = [2 + 1.5 + 1, 3 + 2, 4]  # column 1's second episode
    else:
        g0, g1 = [1.375] * 4, [4.5] * 3
    expected = [
        (1 - p) * 1,  # update 1: only column 1's one-step episode has finished
        -p * sum(g0[:3]) + (1 - p) * g0[3] - p * sum(g1[:2]) + (1 - p) * g1[2],
        2 * (1 - p) * 7,  # update 3: the abandoned episode is not learned
    ]
    for ro, want in zip((ro1, ro2, ro3), expected):
        agent.update(ro)
        assert -float(net.theta.grad) == pytest.approx(want / 6, rel=1e-5)  # Σ ∇log π·Ψ / (T·N)


def test_carry_keeps_dict_observations_and_action_masks():
    from agents.carry import prepend, unfinished_tail
    from agents.masking import ActionMasks

    ro1 = hand_rollout([[0, 1], [0, 0]], [[1, 0], [1, 1]], [[0, 1], [0, 0]], [[1, 1], [1, 0]], [[1, 1], [0, 0]])
    ro1.obs = {"ids": torch.arange(4).reshape(2, 2, 1), "mask": torch.ones(2, 2, 1)}
    masks = torch.tensor([[[1, 0], [1, 1]], [[0, 1], [1, 1]]], dtype=torch.bool)  # (T, N, A)
    ro1.action_masks = ActionMasks.stack(list(masks))
    ro2 = hand_rollout([[1, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 0]], [[1, 1], [0, 1]], [[0, 1], [0, 0]])
    ro2.obs = {"ids": 10 + torch.arange(4).reshape(2, 2, 1), "mask": torch.ones(2, 2, 1)}
    tail = unfinished_tail(ro1)  # column 0 runs on (2 steps); column 1 ended, then a reset step
    assert tail.valid.tolist() == [[True, False], [True, False]]
    full = prepend(tail, ro2)
    assert full.values.shape == (5, 2) and full.valid[:, 0].tolist() == [True, True, True, False]
    assert full.obs["ids"][:, 0, 0].tolist() == [0, 2, 10, 12]
    dense = full.action_masks.dense()  # (4, 2, A): carried masks, then all-allowed for ro2 (no masks)
    assert dense[:2, 0].tolist() == masks[:, 0].tolist() and dense[2:].all()
