"""agents.sampling.sample draws every action with its softmax probability, at LM vocabulary sizes too."""

from __future__ import annotations

import numpy as np
import torch

from agents.sampling import sample


def test_sample_frequencies_match_the_softmax_and_masked_actions_never_appear():
    p = torch.tensor([0.4, 0.3, 0.0, 0.2, 0.1])  # action 2 is masked out
    logits = torch.log(torch.tensor([0.4, 0.3, 0.5, 0.2, 0.1])).expand(60_000, 5)
    mask = torch.tensor([True, True, False, True, True]).expand(60_000, 5)
    actions, logp = sample(logits, mask=mask, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(actions, minlength=5).double() / len(actions)
    se = (p * (1 - p) / len(actions)).sqrt()
    assert freq[2] == 0 and ((freq - p).abs() <= 5 * se + 1e-12).all(), freq
    torch.testing.assert_close(logp, torch.log(p[actions]), rtol=0, atol=1e-6)
    assert (sample(logits[:3], greedy=True, mask=mask[:3])[0] == 0).all()


def test_sample_draws_tail_tokens_below_float32_resolution_exactly():
    """Tokens of probability 2e-8 after a token of mass ~u: a float32 CDF cannot tell them apart.

    Each row's distribution is built around that row's uniform (one float64 uniform per row, from
    the generator), so that the uniform falls inside the tail; the drawn token must be the one
    whose interval holds it, found here by arithmetic on equal tail probabilities.
    """
    R, K, q = 16, 20_000, 2e-8  # rows, tail tokens, probability of each tail token
    u = torch.rand(R, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5))[:, 0].numpy()
    frac = (np.round(np.linspace(0.11, 0.93, R) * K) + 0.5) / K  # mid-interval of a tail token, per row
    p0 = u - frac * K * q
    probs = np.concatenate([p0[:, None], np.full((R, K), q), (1 - p0 - K * q)[:, None]], axis=1)  # (R, K + 2)
    assert (probs > 0).all()
    logits = torch.as_tensor(np.log(probs), dtype=torch.float32)
    actions, logp = sample(logits, generator=torch.Generator().manual_seed(5))
    ref = torch.log_softmax(logits, -1).exp().double().numpy()  # the float32 softmax probabilities
    total = ref.sum(1)
    expected = 1 + np.floor((u * total - ref[:, 0]) / ref[:, 1]).astype(int)  # tail tokens share one probability
    assert ((expected >= 1) & (expected <= K)).all()
    assert actions.tolist() == expected.tolist()
    torch.testing.assert_close(logp.double(), torch.log(torch.as_tensor(ref[:, 1])), rtol=0, atol=1e-6)
