"""agents.sampling.sample draws every action with its softmax probability, at LM vocabulary sizes too, and from
the processed distribution under temperature, top-k and top-p."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.masking import apply_mask
from agents.sampling import process_logits, sample, sample_processed


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


P6 = torch.tensor([0.35, 0.25, 0.2, 0.1, 0.06, 0.04])


@pytest.mark.parametrize("controls, expected", [
    ({"temperature": 0.5}, P6**2 / (P6**2).sum()),  # p^(1/T), renormalised
    ({"top_k": 3}, torch.tensor([0.35, 0.25, 0.2, 0, 0, 0]) / 0.8),
    ({"top_p": 0.5}, torch.tensor([0.35, 0.25, 0, 0, 0, 0]) / 0.6),  # 0.35 < 0.5, then 0.6 >= 0.5: two kept
    ({"top_p": 0.7}, torch.tensor([0.35, 0.25, 0.2, 0, 0, 0]) / 0.8),
    ({"temperature": 2.0, "top_k": 4, "top_p": 0.55},  # T=2: p^0.5 of the top 4 (0.319, 0.270, ...), nucleus
     torch.tensor([0.35**0.5, 0.25**0.5, 0, 0, 0, 0]) / (0.35**0.5 + 0.25**0.5)),
    ({"top_k": 2, "mask": [False, True, True, True, True, True]}, torch.tensor([0, 0.25, 0.2, 0, 0, 0]) / 0.45),
])
def test_sampled_frequencies_match_the_processed_distribution(controls, expected):
    controls = dict(controls)
    n = 100_000
    mask = controls.pop("mask", None)
    mask_t = None if mask is None else torch.tensor(mask).expand(n, 6)
    logits = torch.log(P6).expand(n, 6)
    actions, logp, keep = sample_processed(logits, mask=mask_t, generator=torch.Generator().manual_seed(1), **controls)
    freq = torch.bincount(actions, minlength=6).double() / n
    se = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() <= 5 * se + 1e-12).all(), (freq, expected)
    assert (freq[expected == 0] == 0).all()
    torch.testing.assert_close(logp, torch.log(expected[actions]).float(), rtol=0, atol=1e-5)
    if controls == {"temperature": 0.5}:
        assert keep is None  # nothing is cut: the update only re-applies the temperature
    else:
        assert torch.equal(keep[0], expected > 0)  # the kept set the rollout stores for the update
    logits2, keep2 = process_logits(logits[:1], mask_t if mask_t is None else mask_t[:1], **controls)
    torch.testing.assert_close(torch.log_softmax(apply_mask(logits2, keep2), -1)[0].exp(), expected.float(),
                               rtol=0, atol=1e-6)
