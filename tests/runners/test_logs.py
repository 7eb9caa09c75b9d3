"""runners.common.logs: the final evaluation is one TensorBoard text table, not single-point charts."""

from __future__ import annotations

from runners.common import logs as logging_utils


def test_final_evaluation_is_one_table():
    report = {"v_star_start": 93.65, "greedy": {"discounted_return": 93.1, "success_rate": 1.0},
              "sampled": {"discounted_return": 80.2, "success_rate": 0.9}}
    table = logging_utils.eval_table(report)
    assert table.splitlines()[:4] == ["|mode|discounted_return|success_rate|", "|-|-|-|",
                                      "|greedy|93.1|1|", "|sampled|80.2|0.9|"]
    assert "|v_star_start|93.65|" in table
