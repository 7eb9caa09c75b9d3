"""The generic agent on TextGen-IMDB-v0: exact KL-shaped rewards, teacher-forced = KV-cached log-probs."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401
from agents import agent as agent_module
from agents import losses
from agents.agent import Agent, AgentConfig
from agents.batch import chunk_ids, flatten_obs, make_batch
from agents.networks import CausalLMPolicy, disable_dropout
from agents.rollout import RolloutCollector
from envs.imdb import load_imdb
from runners.common.tiny_lm import make_tiny_lm

BETA = 0.3


def char_score(texts: list[str]) -> list[float]:
    """A dense, deterministic reward: 1/10 per letter 'e'."""
    return [t.count("e") / 10.0 for t in texts]


@pytest.fixture(scope="module")
def texts(imdb_dir) -> list[str]:
    return [r["text"] for r in load_imdb("train", limit=300, seed=0)]


def perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """A copy whose weights differ from the reference, so log π_θ ≠ log π_ref."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return out


def make(tiny_lm, tiny_tokenizer, texts, num_envs=4, num_steps=15, kl_coef=BETA, config=None, scale=0.05,
         full_obs=False, **kw):
    venv = gym.make_vec("TextGen-IMDB-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                        model=copy.deepcopy(tiny_lm), tokenizer=tiny_tokenizer, reward_model=char_score,
                        dataset=texts, max_new_tokens=5, prompt_min_len=2, prompt_max_len=4, kl_coef=kl_coef,
                        device="cpu", **kw)
    venv = gym.wrappers.vector.RecordEpisodeStatistics(venv)
    agent = Agent(CausalLMPolicy(perturbed(tiny_lm, scale)), config or AgentConfig(gamma=1.0))
    return venv, agent, RolloutCollector(venv, agent, num_steps, seed=0, full_obs=full_obs)


def sequence_logprobs(model, tokens: list[int], n_actions: int, head=None) -> torch.Tensor:
    """log p(token) of the last ``n_actions`` tokens by one plain HF forward of the unpadded sequence."""
    ids = torch.tensor([tokens])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0] if head is None else head(model.base_model(ids).last_hidden_state[0])
    logp = torch.log_softmax(logits.double(), -1)
    pos = torch.arange(len(tokens) - n_actions - 1, len(tokens) - 1)
    return logp[pos, ids[0, pos + 1]]


def check_reward_decomposition(venv, agent, collector, tokenizer, beta: float) -> None:
    """One rollout: per token r_t = -β(log π_θ - log π_ref) (+ score on the last token), by plain teacher-forced
    forwards of each finished episode; the logged KL and shaped return are exact."""
    ro, log = collector.collect()
    T, N = ro.actions.shape
    episodes = []  # (end step, env, start step): completion order of the collector's log
    for i in range(N):
        start = None
        for t in range(T):
            if ro.episode_start[t, i]:
                start = t
            if start is not None and ro.valid[t, i] and (ro.terminated[t, i] or ro.truncated[t, i]):
                episodes.append((t, i, start))
                start = None
    episodes.sort()
    assert len(episodes) >= 4 and len(log.scores) >= len(episodes)
    first_end = sorted((t, i) for t in range(T) for i in range(N) if ro.valid[t, i] and ro.terminated[t, i])
    score_of = dict(zip(first_end, log.scores))
    ref = venv.unwrapped.core.ref_model
    assert len(log.kls) == len(first_end)
    kl_of = dict(zip(first_end, log.kls))
    for end, i, start in episodes:
        last = ro.obs.step(end, i)  # an episode's last step: its context is stored
        tokens = last["input_ids"][last["attention_mask"] == 1].tolist() + [int(ro.actions[end, i])]
        n = end - start + 1
        assert tokens[-n:] == ro.actions[start:end + 1, i].tolist()
        lp_pol = sequence_logprobs(agent.net.lm, tokens, n, agent.net.policy_head)
        lp_ref = sequence_logprobs(ref, tokens, n)
        expected = -beta * (lp_pol - lp_ref).numpy()  # (n,) per-token KL shaping
        expected[-1] += score_of[(end, i)]
        np.testing.assert_allclose(ro.rewards[start:end + 1, i].double().numpy(), expected, atol=2e-5)
        assert score_of[(end, i)] == pytest.approx(char_score([tokenizer.decode(tokens, skip_special_tokens=True)])[0])
        # the logged per-episode KL is Σ(log π_θ - log π_ref), whatever β is
        assert kl_of[(end, i)] == pytest.approx(float((lp_pol - lp_ref).sum()), abs=1e-4)
    assert np.abs(log.kls).max() > 1e-3  # not trivially zero (the policy differs from the reference)
    # the logged return of an episode is the shaped return score - β·KL
    assert log.shaped_returns == pytest.approx([s - beta * k for s, k in zip(log.scores, log.kls)], abs=1e-4)


@pytest.mark.parametrize("beta", [BETA, 0.0])
def test_learning_reward_equals_score_minus_beta_kl(tiny_lm, tiny_tokenizer, texts, beta):
    """Per token: r_t = -β(log π_θ - log π_ref) (+ score on the last token); the logged KL is exact for any β."""
    torch.manual_seed(0)
    venv, agent, collector = make(tiny_lm, tiny_tokenizer, texts, kl_coef=beta)
    check_reward_decomposition(venv, agent, collector, tiny_tokenizer, beta)


def check_teacher_forced_equals_rollout(agent, collector, rollouts: int = 2) -> None:
    """Rollout log-probs and values (KV cache) == the update's teacher-forced pass, to 1e-4."""
    for _ in range(rollouts):  # later rollouts start mid-episode: chunks cross rollout boundaries
        ro, _ = collector.collect()
        flat = lambda x: x.transpose(0, 1).reshape(-1)  # noqa: E731
        chunk = torch.as_tensor(chunk_ids(ro.episode_start.numpy(), ro.valid.numpy()))
        batch = make_batch(flatten_obs(ro.obs), flat(ro.actions), chunk, torch.arange(chunk.numel()))
        with torch.no_grad():
            logits, values = agent.net.evaluate(batch)
        logp = torch.log_softmax(logits, -1).gather(1, batch.actions[:, None]).squeeze(1)
        valid = flat(ro.valid)
        assert valid.sum() > 0
        assert torch.allclose(logp[valid], flat(ro.logprobs)[valid], atol=1e-4)
        assert torch.allclose(values[valid], flat(ro.values[:-1])[valid], atol=1e-4)


def test_teacher_forced_update_pass_matches_kv_cached_rollout(tiny_lm, tiny_tokenizer, texts):
    torch.manual_seed(1)
    _, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=3, num_steps=9)
    check_teacher_forced_equals_rollout(agent, collector)


def eos_biased(agent: Agent, eos: int, bias: float = 3.5) -> None:
    """Give the policy head a bias towards EOS, so that rows end (and restart) at different steps."""
    head = agent.net.policy_head
    biased = torch.nn.Linear(head.in_features, head.out_features)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[eos] = bias
    agent.net.policy_head = biased


def test_rows_ending_at_different_steps_stay_exact(tiny_lm, tiny_tokenizer, texts):
    """EOS ends rows at different steps, so rows restart one by one inside the shared KV caches of the policy
    and the reference: log-probs, values and the reward decomposition must stay exact."""
    torch.manual_seed(3)
    venv, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=5, num_steps=20)
    eos_biased(agent, tiny_tokenizer.eos_token_id)
    check_teacher_forced_equals_rollout(agent, collector, rollouts=2)
    ro, _ = collector.collect()
    ends = [set(np.flatnonzero(ro.terminated[:, i].numpy() & ro.valid[:, i].numpy())) for i in range(5)]
    assert len(set.union(*ends)) > 3 and any(a != b for a, b in zip(ends, ends[1:]))  # rows end apart
    check_reward_decomposition(venv, agent, collector, tiny_tokenizer, BETA)


def test_last_step_reads_running_rows_only_and_keeps_the_decoder(tiny_lm, tiny_tokenizer, texts):
    """Rows out of step (EOS): after a rollout's last step only the values of the rows not starting an episode
    are read. They equal a fresh prefill's; the starting rows get 0 and no prefill of their new prompts (the next
    rollout's refresh() prefills every row anyway). The decoder (its logits-path probe) outlives a rollout."""
    torch.manual_seed(3)
    _, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=5, num_steps=20)
    eos_biased(agent, tiny_tokenizer.eos_token_id)
    decoder, before, partial = None, 0, 0
    for _ in range(4):
        ro, _ = collector.collect()
        assert decoder is None or agent.net._decoder is decoder
        decoder = agent.net._decoder
        # one prefill for refresh(), one per later step where some row starts, none for the final observation
        assert decoder.passes["prefill"] - before == 1 + int(ro.episode_start[1:].any(1).sum())
        start = torch.as_tensor(collector.episode_start)
        partial += bool(start.any() and not start.all())
        agent.net.reset_state()
        _, fresh = agent.policy_step(collector.obs, np.ones(5, dtype=bool))  # (N,) values by a plain prefill
        torch.testing.assert_close(ro.values[-1][~start], fresh[~start], atol=1e-5, rtol=0)
        assert (ro.values[-1][start] == 0).all()
        before = decoder.passes["prefill"]
    assert partial >= 2  # rollouts that ended with some rows, not all, starting an episode


def test_one_policy_and_one_reference_forward_per_token(tiny_lm, tiny_tokenizer, texts):
    """All rows start together and end together (fixed length, no EOS): a rollout of max_new_tokens + 1 steps
    costs the policy one forward per new token (a prefill, then decodes), like generate(); the reference the
    same; no forward on the reset step, none for an unread final value, none re-reading the prompts."""
    torch.manual_seed(4)
    venv, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=4, num_steps=6)
    eos_biased(agent, tiny_tokenizer.eos_token_id, bias=-1e4)  # never EOS: every episode has 5 new tokens
    calls = {"policy": 0, "reference": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    agent.net.act = counted("policy", agent.net.act)
    core = venv.unwrapped.core
    core.ref_lm.step = counted("reference", core.ref_lm.step)
    for _ in range(3):
        ro, _ = collector.collect()
        assert ro.valid[:5].all() and not ro.valid[5].any() and ro.terminated[4].all()
        assert calls == {"policy": 5, "reference": 5}
        calls.update(policy=0, reference=0)
    check_teacher_forced_equals_rollout(agent, collector, rollouts=1)


def test_one_ppo_and_one_reinforce_update_change_the_policy(tiny_lm, tiny_tokenizer, texts):
    """One update moves the value head, and moves the policy so that log π rises where Â > 0.

    The policy check has no entropy or value term, so only the policy gradient can move the LM:
    Σ Â·(log π_new - log π_old) over the learned steps (the first-order surrogate gain) must be > 0.
    """
    for algo in ("ppo", "reinforce"):
        torch.manual_seed(2)
        config = AgentConfig(algo=algo, gamma=1.0, learning_rate=1e-3, num_minibatches=2, update_epochs=1)
        _, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=4, num_steps=12, config=config)
        before = [p.detach().clone() for p in agent.net.value_head.parameters()]
        stats = agent.update(collector.collect()[0])
        assert np.isfinite(stats["policy_loss"]) and np.isfinite(stats["value_loss"])
        assert any(not torch.equal(b, p) for b, p in zip(before, agent.net.value_head.parameters()))

        torch.manual_seed(2)
        config = AgentConfig(algo=algo, gamma=1.0, learning_rate=1e-3, num_minibatches=1, update_epochs=1,
                             ent_coef=0.0, vf_coef=0.0, reinforce_baseline=False)
        _, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=4, num_steps=12, config=config)
        ro = collector.collect()[0]
        est = agent.advantages(ro)
        adv, mask = est.adv, est.mask
        flat = lambda x: x.transpose(0, 1).reshape(-1)  # noqa: E731
        chunk = torch.as_tensor(chunk_ids(ro.episode_start.numpy(), ro.valid.numpy()))
        batch = make_batch(flatten_obs(ro.obs), flat(ro.actions), chunk, torch.arange(chunk.numel()))

        def logp() -> torch.Tensor:
            with torch.no_grad():
                return torch.log_softmax(agent.net.evaluate(batch)[0], -1).gather(1, batch.actions[:, None])[:, 0]

        old = logp()
        agent.update(ro)
        a = flat(adv)[flat(mask)]
        a = a - a.mean() if algo == "ppo" else a  # the agent whitens PPO's advantages (std: a positive scale)
        gain = float((a * (logp() - old)[flat(mask)]).sum())
        assert gain > 0, (algo, gain)


def test_dropout_free_policy_ppo_ratio_is_one_at_learning_rate_zero(tiny_lm, tiny_tokenizer, texts, monkeypatch):
    """A GPT-2 with dropout 0.1 in its config: at θ = θ_old the PPO ratio is 1, approx_kl 0, clipfrac 0."""
    assert tiny_lm.config.attn_pdrop == tiny_lm.config.resid_pdrop == tiny_lm.config.embd_pdrop == 0.1
    torch.manual_seed(3)
    config = AgentConfig(gamma=1.0, learning_rate=0.0, update_epochs=2, num_minibatches=2)
    _, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=4, num_steps=12, config=config)
    lm = agent.net.lm
    assert all(m.p == 0.0 for m in lm.modules() if isinstance(m, torch.nn.Dropout))
    assert lm.config.attn_pdrop == lm.config.resid_pdrop == lm.config.embd_pdrop == 0.0
    ratios: list[torch.Tensor] = []
    original = losses.ppo_clip_loss

    def recording(*args, **kwargs):
        loss, ratio = original(*args, **kwargs)
        ratios.append(ratio.detach())
        return loss, ratio

    monkeypatch.setattr(losses, "ppo_clip_loss", recording)
    stats = agent.update(collector.collect()[0])
    ratio = torch.cat(ratios)
    assert ratio.numel() > 40
    assert (ratio - 1).abs().max() < 2e-5  # float32 KV-cached sampling vs one teacher-forced pass
    assert stats["approx_kl"] < 1e-9 and stats["clipfrac"] == 0.0


def test_disable_dropout_zeroes_modules_attributes_and_configs():
    from transformers import GPT2Config, GPT2LMHeadModel

    class Custom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention_dropout = 0.2  # read at call time by some attention implementations
            self.drop = torch.nn.Dropout2d(0.3)
            self.lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=11, n_positions=8))

    m = disable_dropout(Custom())
    assert m.attention_dropout == 0.0 and m.drop.p == 0.0
    assert all(x.p == 0.0 for x in m.modules() if isinstance(x, torch.nn.modules.dropout._DropoutNd))
    cfg = m.lm.config
    assert cfg.attn_pdrop == cfg.resid_pdrop == cfg.embd_pdrop == cfg.summary_first_dropout == 0.0
    m.train()
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(m.lm(x).logits, m.lm(x).logits)  # train mode is deterministic


@pytest.mark.slow
def test_exact_at_realistic_size(tiny_tokenizer, texts):
    """The same exactness for a GPT-2 of 6 layers x 8 heads x 512 dims (23M parameters): KV-cached rollout
    log-probs/values == teacher-forced pass, and the reward decomposition, with rows ending at different steps."""
    lm = make_tiny_lm(tiny_tokenizer, seed=1, n_layer=6, n_head=8, n_embd=512).eval()
    assert sum(p.numel() for p in lm.parameters()) > 20e6
    torch.manual_seed(5)
    venv, agent, collector = make(lm, tiny_tokenizer, texts, num_envs=4, num_steps=12, scale=0.01)
    eos_biased(agent, tiny_tokenizer.eos_token_id, bias=2.0)
    check_teacher_forced_equals_rollout(agent, collector, rollouts=2)
    check_reward_decomposition(venv, agent, collector, tiny_tokenizer, BETA)


def test_bf16_autocast_option(tiny_lm, tiny_tokenizer, texts):
    """autocast_dtype=bfloat16 on the policy and the env: caches in bf16, log-probs and values within bf16 accuracy
    of the teacher-forced pass (also under autocast) and of float32."""
    torch.manual_seed(6)
    venv, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=3, num_steps=8, autocast_dtype="bfloat16")
    agent.net.autocast_dtype = torch.bfloat16
    ro, _ = collector.collect()
    assert agent.net._decoder._cache.layers[0].keys.dtype == torch.bfloat16
    assert venv.unwrapped.core.ref_lm._cache.layers[0].keys.dtype == torch.bfloat16
    flat = lambda x: x.transpose(0, 1).reshape(-1)  # noqa: E731
    chunk = torch.as_tensor(chunk_ids(ro.episode_start.numpy(), ro.valid.numpy()))
    batch = make_batch(flatten_obs(ro.obs), flat(ro.actions), chunk, torch.arange(chunk.numel()))
    valid = flat(ro.valid)
    with torch.no_grad():
        logits, values = agent.net.evaluate(batch)
        agent.net.autocast_dtype = None
        logits32, _ = agent.net.evaluate(batch)
    assert logits.dtype == values.dtype == torch.float32
    for lg in (logits, logits32):
        logp = torch.log_softmax(lg, -1).gather(1, batch.actions[:, None]).squeeze(1)
        assert (logp[valid] - flat(ro.logprobs)[valid]).abs().max() < 0.15
    assert (values[valid] - flat(ro.values[:-1])[valid]).abs().max() < 0.05
    with pytest.raises(ValueError, match="autocast_dtype"):
        make(tiny_lm, tiny_tokenizer, texts, num_envs=1, autocast_dtype="int8")


@pytest.mark.parametrize("controls", [{"temperature": 0.7}, {"top_k": 20}, {"top_p": 0.8},
                                      {"temperature": 1.3, "top_k": 50, "top_p": 0.9}])
def test_sampling_controls_rollout_and_update_logprobs_agree(tiny_lm, tiny_tokenizer, texts, controls, monkeypatch):
    """Temperature / top-k / top-p: the update evaluates the distribution the rollout sampled from (1e-4), its
    entropy too; the env's reference is tempered alike, so the logged KL compares like with like."""
    torch.manual_seed(0)
    config = AgentConfig(gamma=1.0, learning_rate=0.0, update_epochs=1, num_minibatches=2, **controls)
    venv, agent, collector = make(tiny_lm, tiny_tokenizer, texts, num_envs=4, num_steps=12, config=config,
                                  temperature=controls.get("temperature", 1.0), full_obs=True)  # reads step 0
    assert venv.unwrapped.core.temperature == controls.get("temperature", 1.0)
    terms: list = []
    original = agent_module.minibatch_loss
    monkeypatch.setattr(agent_module, "minibatch_loss", lambda spec, c, m, kl: terms.append(m) or original(spec, c, m, kl))
    ro, _ = collector.collect()
    agent.update(ro)
    new = torch.cat([m.logprob.detach() for m in terms])
    old = torch.cat([m.old_logprob for m in terms])
    assert new.numel() > 30 and (new - old).abs().max() < 1e-4
    # the controls did change the distribution: the plain softmax gives other log-probs
    plain = torch.log_softmax(agent.net.lm(ro.obs["input_ids"][0]).logits[:, -1].float(), -1)  # (N, V) t=0 rows
    first = ro.logprobs[0]
    assert (plain.gather(1, ro.actions[0][:, None]).squeeze(1) - first).abs().max() > 1e-3
    if "top_k" in controls or "top_p" in controls:  # the kept set is stored and has fewer tokens than V
        kept = ro.action_masks.dense()[ro.valid].sum(-1)
        assert (kept < agent.net.policy_head.weight.shape[0]).all()
        if "top_k" in controls:
            assert (kept <= controls["top_k"]).all()
