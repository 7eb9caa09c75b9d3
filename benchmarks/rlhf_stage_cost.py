"""CPU cost per step of the three ``runners.rlhf --preset tiny`` stages, independent of machine load.

A shared machine inflates wall-clock times; CPU time of a single-threaded process (``time.process_time``)
is close to what the same work takes on an idle core. This measures, at the tiny preset's sizes
(4-layer 256-wide GPT-2, vocab 8192), the CPU seconds of one SFT optimizer step (16 x 128 tokens),
one reward-model step (32 pairs, 96 tokens) and one PPO update (64 envs x 17 steps, 4 epochs x 4
minibatches, reward model in the loop, EOS masked for 12 of 16 tokens), and extrapolates the preset::

    OMP_NUM_THREADS=1 python benchmarks/rlhf_stage_cost.py [--sft-steps 5 --rm-steps 5 --ppo-updates 2]

The extrapolation (steps x CPU s/step) leaves out data preparation and evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2ForSequenceClassification

from envs.imdb import load_imdb
from runners.common.pretrained import save_pretrained_atomic
from runners.common.tiny_lm import make_tiny_lm, tiny_gpt2_config, train_tokenizer
from runners.rlhf import PRESETS
from runners.train import preset, train


def cpu_per_step(step, n: int) -> float:
    step()  # warm-up
    t0 = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft-steps", type=int, default=5)
    ap.add_argument("--rm-steps", type=int, default=5)
    ap.add_argument("--ppo-updates", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tiny = PRESETS["tiny"]
    texts = [r["text"] for r in load_imdb("train", limit=2000, seed=0)]
    tok = train_tokenizer(texts, vocab_size=8192)
    size = dict(n_layer=4, n_head=4, n_embd=256, n_positions=256)

    lm = make_tiny_lm(tok, seed=0, **size).train()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    x = torch.randint(0, len(tok), (16, 128))

    def sft_step() -> None:
        loss = lm(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    sft_s = cpu_per_step(sft_step, args.sft_steps)

    rm = GPT2ForSequenceClassification(tiny_gpt2_config(tok, num_labels=1, **size)).train()
    rm_opt = torch.optim.AdamW(rm.parameters(), lr=1e-4)
    batch = tok(texts[:64], padding=True, truncation=True, max_length=96, return_tensors="pt")

    def rm_step() -> None:
        r = rm(**batch).logits[:, 0]
        loss = -torch.nn.functional.logsigmoid(r[:32] - r[32:]).mean()
        rm_opt.zero_grad()
        loss.backward()
        rm_opt.step()

    rm_s = cpu_per_step(rm_step, args.rm_steps)

    with tempfile.TemporaryDirectory() as tmp:
        lm_dir = save_pretrained_atomic(lm.eval(), tok, Path(tmp) / "lm")
        rm.config.pad_token_id = tok.pad_token_id
        tok.padding_side = "right"
        rm_dir = save_pretrained_atomic(rm.eval(), tok, Path(tmp) / "rm")
        num_steps = tiny.max_new_tokens + 1
        cfg = dataclasses.replace(
            preset("TextGen-IMDB-v0", "ppo"), model=str(lm_dir), reward_model=str(rm_dir), device="cpu", threads=1,
            progress=False, num_envs=tiny.num_envs, num_steps=num_steps, max_new_tokens=tiny.max_new_tokens,
            min_new_tokens=tiny.min_new_tokens, log_dir=str(Path(tmp) / "runs"), run_name="bench",
            total_timesteps=tiny.num_envs * num_steps * (args.ppo_updates + 1))
        t0 = time.process_time()
        train(cfg, env_overrides={"dataset": texts})
        ppo_s = (time.process_time() - t0) / (args.ppo_updates + 1)  # includes env/model loading once

    total = tiny.sft_steps * sft_s + tiny.rm_steps * rm_s + tiny.ppo_updates * ppo_s
    print(f"CPU seconds, 1 thread: SFT {sft_s:.2f}/step, reward model {rm_s:.2f}/step, PPO {ppo_s:.2f}/update")
    print(f"--preset tiny ({tiny.sft_steps} + {tiny.rm_steps} steps, {tiny.ppo_updates} updates): "
          f"{tiny.sft_steps * sft_s / 60:.1f} + {tiny.rm_steps * rm_s / 60:.1f} + {tiny.ppo_updates * ppo_s / 60:.1f} "
          f"= {total / 60:.1f} CPU-minutes (one core; data preparation and evaluation not included)")


if __name__ == "__main__":
    main()
