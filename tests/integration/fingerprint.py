"""Fingerprints of three short training runs: same command and seed must give the same numbers.

    python tests/integration/fingerprint.py            # print the fingerprints as JSON
    python tests/integration/fingerprint.py --write    # record them in fingerprints.json

Each run (CatGrid PPO, CatGrid REINFORCE, tiny-LM text GRPO with a character-count reward) trains
through ``runners.train.train`` with one thread and reports a SHA-256 of its final weights (bit
identity on this machine and torch build) beside the final statistics and the sum of the weights
(numbers :mod:`tests.integration.test_fingerprints` compares with a tolerance, so that a CPU with
other vector units still checks the code path). Recorded before the architecture restructuring.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RECORD = Path(__file__).with_name("fingerprints.json")
TINY = {"n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 256}


def char_score(texts: list[str]) -> list[float]:
    """Deterministic reward: share of the letters 'a'-'m' in the text."""
    return [sum("a" <= ch <= "m" for ch in t) / max(len(t), 1) for t in texts]


def _digest(net: torch.nn.Module) -> tuple[str, float]:
    h = hashlib.sha256()
    total = 0.0
    for name, p in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
        total += float(p.detach().double().sum())
    return h.hexdigest(), total


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    sha, wsum = _digest(result["agent"].net)
    out = {"sha256": sha, "weight_sum": wsum, "global_step": result["global_step"]}
    out |= {k: v for k, v in result.items() if k.startswith("recent_")}
    if "eval" in result:
        out["eval_greedy_mean"] = result["eval"]["greedy"]["discounted_return"]
        out["eval_sampled_mean"] = result["eval"]["sampled"]["discounted_return"]
    return out


def catgrid(algo: str, log_dir: Path) -> dict[str, Any]:
    from runners.train import parse_args, train

    cfg = parse_args(["--env", "CatGrid-v0", "--algo", algo, "--total-timesteps", "4096", "--num-envs", "8",
                      "--num-steps", "64", "--d-model", "32", "--n-layer", "1", "--eval-episodes", "16",
                      "--no-progress", "--threads", "1", "--log-dir", str(log_dir), "--seed", "3"])
    return _summary(train(cfg))


def text_grpo(log_dir: Path) -> dict[str, Any]:
    from envs.imdb import default_imdb_dir, load_imdb
    try:
        from runners.common.tiny_lm import make_tiny_lm, train_tokenizer
    except ImportError:  # before the restructuring
        from runners.lm_presets import make_tiny_lm, train_tokenizer
    from runners.train import parse_args, train

    texts = [row["text"] for row in load_imdb("train", source=default_imdb_dir(), limit=300, seed=0)]
    tok = train_tokenizer(texts, vocab_size=1024)
    lm = make_tiny_lm(tok, seed=0, **TINY).eval()
    cfg = parse_args(["--env", "TextGen-IMDB-v0", "--algo", "grpo", "--total-timesteps", str(3 * 8 * 9),
                      "--num-envs", "8", "--num-steps", "9", "--max-new-tokens", "6", "--no-progress",
                      "--threads", "1", "--log-dir", str(log_dir), "--seed", "1", "--device", "cpu",
                      "--dataset", str(default_imdb_dir())])
    return _summary(train(cfg, env_overrides={"model": lm, "tokenizer": tok, "reward_model": char_score}))


def fingerprints() -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return {"catgrid_ppo": catgrid("ppo", Path(tmp)), "catgrid_reinforce": catgrid("reinforce", Path(tmp)),
                "text_grpo": text_grpo(Path(tmp))}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"record the fingerprints in {RECORD.name}")
    fp = fingerprints()
    print(json.dumps(fp, indent=2))
    if ap.parse_args().write:
        RECORD.write_text(json.dumps(fp, indent=2) + "\n")
