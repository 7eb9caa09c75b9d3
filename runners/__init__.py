"""Runners of rlhf-gym: training, evaluation, comparison and the RLHF stages (``python -m runners.<name>``).

The entry points are the modules of this package; what they share lives in :mod:`runners.common`. The loaders
of a finished run are re-exported here: ``from runners import load_agent, load_policy``.

The top-level package names ``envs``/``agents``/``runners`` are generic, so another project's ``envs`` package can
shadow ours; importing any runner checks for rlhf-gym's marker first and says so plainly instead of failing later
with ``NameNotFound: Environment CatGrid doesn't exist`` or ``No module named 'envs.lm'``.
"""

import envs as _envs

if not getattr(_envs, "RLHF_GYM", False):
    raise ImportError(
        f"`import envs` found {getattr(_envs, '__file__', None) or list(getattr(_envs, '__path__', []))}, which is not "
        "rlhf-gym's envs package (it has no RLHF_GYM marker). Another project's `envs` shadows it: run from outside "
        "that project, or put rlhf-gym's directory first on sys.path / PYTHONPATH."
    )

from runners.common.export import load_policy  # noqa: E402  (after the marker check above)
from runners.common.load import load_agent, load_run  # noqa: E402

__all__ = ["load_agent", "load_policy", "load_run"]
