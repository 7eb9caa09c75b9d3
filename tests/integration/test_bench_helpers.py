"""The pure helpers of the text benchmarks and of the GPU check (their CPU-side logic), by hand-worked numbers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_check  # noqa: E402
import perf  # noqa: E402
import vs_trl  # noqa: E402


def test_shapes_flops_and_pass_counts():
    assert perf.parse_shape("same", (6, 8, 512)) == (6, 8, 512)
    assert perf.parse_shape("12x12x768", (2, 4, 128)) == (12, 12, 768)
    for bad in ("6x8", "6x0x512", "axbxc", "6x7x512"):  # 512 is no multiple of 7 heads
        with pytest.raises(ValueError, match="shape"):
            perf.parse_shape(bad, (2, 4, 128))
    assert perf.forward_gflop(10**9, 3) == 6.0 and perf.forward_gflop(10**9, 3, backward=True) == 18.0
    assert perf.gflops(6.0, 2.0) == 3.0 and perf.gflops(6.0, 0.0) == 0.0
    assert perf.diff_counts({"a": 5, "b": 2}, {"a": 3}) == {"a": 2, "b": 2}
    assert perf.format_passes({"policy": {"decode": 15, "prefill": 1}, "reference": {"decode": 0}}) == (
        "policy 15 decode + 1 prefill, reference none")


def test_trl_config_and_the_steady_ratio():
    kw = vs_trl.trl_config_kwargs(64, 4, 16, 5)
    assert (kw["per_device_train_batch_size"], kw["gradient_accumulation_steps"], kw["num_mini_batches"]) == (16, 4, 4)
    assert (kw["total_episodes"], kw["response_length"], kw["num_ppo_epochs"]) == (320, 16, 1)
    with pytest.raises(ValueError, match="multiple of --num-minibatches"):
        vs_trl.trl_config_kwargs(30, 4, 16, 5)
    # warm-up (index 0) dropped; per-iteration ratios 2, 3, 1.5 -> median 2
    assert vs_trl.steady_ratio([9.0, 1.0, 1.0, 2.0], [1.0, 2.0, 3.0, 3.0]) == 2.0
    with pytest.raises(ValueError, match="same number"):
        vs_trl.steady_ratio([1.0, 1.0], [1.0])


def test_gpu_check_table_and_exit_code_on_planted_data():
    good = [gpu_check.Row("reward", 3e-6, 1e-4), gpu_check.Row("runs: textgen_speed", 0.0, 0.0)]
    assert gpu_check.exit_code(good) == 0
    planted = [*good, gpu_check.Row("log-prob", 2e-3, 1e-4), gpu_check.Row("nan", math.nan, 1.0)]
    assert gpu_check.exit_code(planted) == 1 and gpu_check.exit_code([]) == 1
    text = gpu_check.table(planted)
    assert text.splitlines()[3].endswith("NO") and text.splitlines()[1].endswith("yes")
    assert text.splitlines()[-1] == "2/4 ok; mismatches: log-prob, nan"


def test_gpu_check_arguments_commands_and_the_needs_cuda_exit(monkeypatch, capsys):
    with pytest.raises(SystemExit) as err:
        gpu_check.parse_args(["--device", "cpu"])
    assert err.value.code == 2
    assert gpu_check.parse_args(["--device", "cuda:1"]).device == "cuda:1"
    names = [name for name, _ in gpu_check.benchmark_commands("python", trl=False)]
    assert names == ["textgen_speed 23M float32", "textgen_speed 23M bfloat16"]
    with_trl = dict(gpu_check.benchmark_commands("python", trl=True))
    assert with_trl["vs_trl 23M bfloat16"][-2:] == ["--autocast-dtype", "bfloat16"]
    ddp = dict(gpu_check.ddp_commands("python", "/tmp/x"))
    assert "--nproc-per-node=2" in ddp["torchrun 2 ranks"] and ddp["one process"].count("16") == 1
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "needs CUDA" in capsys.readouterr().out
