"""Agent.update's gradient equals the gradient of the lecture's loss written out step by step.

A CatGrid rollout with terminations, truncations and reset steps is collected, the network is
then perturbed (so θ ≠ θ_old: ratios ≠ 1, some clipped), and ``Agent.update`` runs with learning
rate 0, one epoch and one minibatch, so ``p.grad`` afterwards is the gradient of its loss. The
reference loss below is written independently with plain Python loops over each env column
(GAE, rewards-to-go, which steps count) and compared parameter by parameter.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch

from agents.agent import Agent, AgentConfig
from agents.networks import GridTransformer
from agents.rollout import RolloutCollector
from envs.catgrid_vector import CatGridVectorEnv

GAMMA, LAM, CLIP, ENT, VF = 0.9, 0.8, 0.2, 0.05, 0.5


@pytest.fixture(scope="module")
def rollout_and_net():
    torch.manual_seed(0)
    venv = gym.wrappers.vector.RecordEpisodeStatistics(
        CatGridVectorEnv(num_envs=4, desc=["B.C.M", "..T.."], slip=0.2, max_episode_steps=4))
    net = GridTransformer.from_spaces(venv.single_observation_space, venv.single_action_space,
                                      d_model=16, n_layer=1, n_head=2)
    ro, _ = RolloutCollector(venv, Agent(net, AgentConfig()), 12, reward_scale=0.1, seed=0).collect()
    ro.obs = ro.obs.clone()
    assert (~ro.valid).any() and ro.truncated.any() and ro.terminated.any()
    with torch.no_grad():  # θ ≠ θ_old
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape))
    return ro, net


def agent_grads(net, ro, **cfg):
    base = dict(learning_rate=0.0, update_epochs=1, num_minibatches=1, max_grad_norm=1e9, anneal_lr=False,
                gamma=GAMMA, gae_lambda=LAM, clip_coef=CLIP, ent_coef=ENT, vf_coef=VF)
    agent = Agent(net, AgentConfig(**{**base, **cfg}))
    net.zero_grad(set_to_none=True)
    stats = agent.update(ro)
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, stats


def forward(net, ro):
    T, N = ro.actions.shape
    logits, values = net._forward(ro.obs.reshape(T * N, -1))
    logp_all = torch.log_softmax(logits, -1)  # (T*N, A)
    logp = logp_all.gather(1, ro.actions.reshape(-1, 1)).squeeze(1).reshape(T, N)
    entropy = -(logp_all.exp() * logp_all).sum(-1).reshape(T, N)
    return logp, entropy, values.reshape(T, N)


def reference_grads(net, loss):
    net.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def assert_same(got, want):
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-7, msg=name)


def test_ppo_gradient_and_stats_match_a_step_by_step_loss(rollout_and_net):
    ro, net = rollout_and_net
    got, stats = agent_grads(net, ro, algo="ppo", norm_adv=True, clip_vloss=True)
    T, N = ro.actions.shape
    r, V = ro.rewards.tolist(), ro.values.tolist()
    adv = [[0.0] * N for _ in range(T)]
    for i in range(N):
        running = 0.0
        for t in reversed(range(T)):
            term, done = bool(ro.terminated[t, i]), bool(ro.terminated[t, i] or ro.truncated[t, i])
            delta = r[t][i] + GAMMA * V[t + 1][i] * (0.0 if term else 1.0) - V[t][i]
            running = delta + GAMMA * LAM * (0.0 if done else 1.0) * running
            adv[t][i] = running
    keep = [(t, i) for t in range(T) for i in range(N) if ro.valid[t, i]]  # reset steps are not learned
    A = torch.tensor([adv[t][i] for t, i in keep])
    ret = A + torch.tensor([V[t][i] for t, i in keep])  # value targets from the raw advantages
    A = (A - A.mean()) / (A.std() + 1e-8)
    logp, entropy, values = forward(net, ro)
    tt, ii = torch.tensor(keep).T
    ratio = torch.exp(logp[tt, ii] - ro.logprobs[tt, ii])
    pg = torch.max(-ratio * A, -ratio.clamp(1 - CLIP, 1 + CLIP) * A).mean()
    v_new, v_old = values[tt, ii], ro.values[tt, ii]
    v_clip = v_old + (v_new - v_old).clamp(-CLIP, CLIP)
    v_loss = 0.5 * torch.max((v_new - ret) ** 2, (v_clip - ret) ** 2).mean()
    want = reference_grads(net, pg - ENT * entropy[tt, ii].mean() + VF * v_loss)
    assert_same(got, want)
    with torch.no_grad():
        assert stats["approx_kl"] == pytest.approx(float(((ratio - 1) - ratio.log()).mean()), rel=1e-4)
        assert stats["clipfrac"] == pytest.approx(float(((ratio - 1).abs() > CLIP).float().mean()), abs=1e-6)
        assert 0 < stats["clipfrac"] < 1 and stats["approx_kl"] > 1e-3  # the ratios are the sampling ones


@pytest.mark.parametrize("ret_kind", ["to_go", "episode"])
def test_reinforce_gradient_matches_a_step_by_step_loss(rollout_and_net, ret_kind):
    ro, net = rollout_and_net
    got, _ = agent_grads(net, ro, algo="reinforce", reinforce_return=ret_kind, reinforce_baseline=True,
                         norm_adv=True)
    T, N = ro.actions.shape
    r, V = ro.rewards.tolist(), ro.values.tolist()
    keep, G = [], []
    for i in range(N):  # whole episodes that finish in the rollout (this is the first rollout)
        t = 0
        while t < T:
            if not ro.valid[t, i]:
                t += 1
                continue
            end = t
            while end < T and not (ro.terminated[end, i] or ro.truncated[end, i]):
                end += 1
            if end == T:
                break  # unfinished: carried over, not learned now
            to_go = [0.0] * (end - t + 1)
            for k in reversed(range(t, end + 1)):
                to_go[k - t] = r[k][i] + (GAMMA * to_go[k - t + 1] if k < end else 0.0)
            for k in range(t, end + 1):
                keep.append((k, i))
                G.append(to_go[k - t] if ret_kind == "to_go" else to_go[0])
            t = end + 1
    G = torch.tensor(G)
    tt, ii = torch.tensor(keep).T
    psi = G - torch.tensor([V[t][i] for t, i in keep])  # the stored V(s_t) as baseline: a constant
    psi = psi / (psi.std() + 1e-8)  # rescaled only
    logp, entropy, values = forward(net, ro)
    terms = -logp[tt, ii] * psi - ENT * entropy[tt, ii] + VF * 0.5 * (values[tt, ii] - G) ** 2
    want = reference_grads(net, terms.sum() / (T * N))
    assert_same(got, want)


def test_entropy_bonus_is_a_bonus(rollout_and_net):
    """With every advantage 0 the PPO loss is -c_e·entropy: its gradient is -c_e·∇H (descent raises H)."""
    ro, net = rollout_and_net
    zero = type(ro)(**{**ro.__dict__, "rewards": torch.zeros_like(ro.rewards), "values": torch.zeros_like(ro.values)})
    got, _ = agent_grads(net, zero, algo="ppo", norm_adv=False, ent_coef=1.0, vf_coef=0.0)
    _, entropy, _ = forward(net, ro)
    want = reference_grads(net, -entropy[ro.valid].mean())
    assert_same({n: g for n, g in got.items() if n in want}, want)


def test_reinforce_loss_treats_its_weights_as_constants():
    from agents import losses

    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    psi = torch.tensor([3.0, -1.0], requires_grad=True)  # e.g. G - V_θ(s): the baseline must get no gradient
    losses.reinforce_loss(logp, psi).backward()
    assert psi.grad is None or (psi.grad == 0).all()
    assert logp.grad.tolist() == [-1.5, 0.5]  # -Ψ / B


@pytest.mark.parametrize("scope", ["rollout", "minibatch"])
def test_norm_adv_scope(rollout_and_net, monkeypatch, scope):
    """``rollout``: one whitening over all valid steps; ``minibatch``: each minibatch whitened on its own."""
    from agents import losses

    ro, net = rollout_and_net
    seen: list[torch.Tensor] = []
    original = losses.ppo_clip_loss

    def recording(logprob, old_logprob, advantages, clip_coef, weights=None):
        seen.append(advantages.detach())
        return original(logprob, old_logprob, advantages, clip_coef, weights)

    monkeypatch.setattr(losses, "ppo_clip_loss", recording)
    agent_grads(net, ro, algo="ppo", num_minibatches=2, norm_adv_scope=scope)
    assert len(seen) == 2
    means = [float(a.mean()) for a in seen]
    stds = [float(a.std()) for a in seen]
    together = torch.cat(seen)
    if scope == "minibatch":
        assert means == pytest.approx([0.0, 0.0], abs=1e-5) and stds == pytest.approx([1.0, 1.0], abs=1e-4)
    else:
        assert float(together.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(together.std()) == pytest.approx(1.0, abs=1e-4) and abs(means[0]) > 1e-3
    with pytest.raises(ValueError, match="norm_adv_scope"):
        AgentConfig(norm_adv_scope="batch")


def _grpo_rollout(ro, k=2):
    """The fixture's rollout with groups of k: the e-th episode of rows ``i // k`` (as the collector numbers them),
    and reference log-probs for the KL loss term (the sampling ones, shifted)."""
    ro = copy.copy(ro)
    N = ro.actions.shape[1]
    episode = torch.cumsum(ro.episode_start.long(), 0) - 1  # (T, N)
    ro.group, ro.group_size = episode * (N // k) + torch.arange(N) // k, k
    ro.ref_logprobs, ro.kl_coef = ro.logprobs - 0.3 * torch.linspace(-1, 1, ro.logprobs.numel()).view_as(ro.logprobs), 0.4
    return ro


def _reference_grpo_loss(net, ro, aggregation, k=2, eps=1e-4, rloo=False):
    """GRPO written out: whole groups of k finished episodes, A = (G_0 - mean) / (std + eps) on every step,
    clipped surrogate, entropy bonus and β·k3 on the current log-probs, aggregated as asked. ``rloo``: RLOO's
    A = G_0 - mean of the others, -log π·A, no KL term."""
    T, N = ro.actions.shape
    episodes = []  # (steps, return, group)
    for i in range(N):
        t = 0
        while t < T:
            if not ro.valid[t, i]:
                t += 1
                continue
            end = t
            while end < T and not (ro.terminated[end, i] or ro.truncated[end, i]):
                end += 1
            if end == T:
                break
            g0 = sum(GAMMA ** (s - t) * float(ro.rewards[s, i]) for s in range(t, end + 1))
            episodes.append(([(s, i) for s in range(t, end + 1)], g0, int(ro.group[t, i])))
            t = end + 1
    groups: dict[int, list] = {}
    for ep in episodes:
        groups.setdefault(ep[2], []).append(ep)
    learned = [ep for g in groups.values() if len(g) == k for ep in g]
    assert len(learned) >= 2 * k
    logp, entropy, _ = forward(net, ro)
    total, steps = 0.0, 0
    for g in (g for g in groups.values() if len(g) == k):
        rets = torch.tensor([ep[1] for ep in g], dtype=torch.float64)
        advs = (rets - (rets.sum() - rets) / (k - 1)) if rloo else (rets - rets.mean()) / (rets.std() + eps)
        for (cells, _, _), a in zip(g, advs.tolist()):
            tt, ii = torch.tensor(cells).T
            ratio = torch.exp(logp[tt, ii] - ro.logprobs[tt, ii])
            x = logp[tt, ii] - ro.ref_logprobs[tt, ii]
            term = (-torch.min(ratio * a, ratio.clamp(1 - CLIP, 1 + CLIP) * a) - ENT * entropy[tt, ii]
                    + ro.kl_coef * (torch.exp(-x) + x - 1))
            if rloo:
                term = -logp[tt, ii] * a - ENT * entropy[tt, ii]
            total = total + (term.mean() / len(learned) if aggregation == "sequence_mean" else term.sum())
            steps += len(cells)
    if aggregation == "token_mean":
        return total / steps
    return total / (T * N) if aggregation == "constant" else total


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
def test_grpo_gradient_matches_a_step_by_step_loss(rollout_and_net, aggregation):
    ro, net = rollout_and_net
    ro = _grpo_rollout(ro)
    got, stats = agent_grads(net, ro, algo="grpo", kl_mode="loss", loss_aggregation=aggregation)
    assert stats["group/episodes"] >= 8
    want = reference_grads(net, _reference_grpo_loss(net, ro, aggregation))
    assert_same(got, want)


def test_rloo_gradient_matches_a_step_by_step_loss_with_a_constant_denominator(rollout_and_net):
    ro, net = rollout_and_net
    ro = _grpo_rollout(ro)
    got, _ = agent_grads(net, ro, algo="rloo", reinforce_return="episode", norm_adv=False)
    want = reference_grads(net, _reference_grpo_loss(net, ro, "constant", rloo=True))
    assert_same(got, want)
