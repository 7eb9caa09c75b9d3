"""What both text env faces (:class:`envs.textgen.TextGenEnv`, :class:`envs.textgen_vector.TextGenVectorEnv`)
read through to their :class:`envs.textgen_core.TextGenCore`: ``kl_coef`` (β), ``ref_mode`` and the pass counts."""

from __future__ import annotations

from envs.textgen_core import TextGenCore

__all__ = ["CoreKLCoef"]


class CoreKLCoef:
    """``kl_coef`` (β) of an env backed by a :class:`TextGenCore`, readable and settable (the rollout collector's
    ``set_kl_coef`` writes it), its ``ref_mode`` and its forward-pass counts."""

    core: TextGenCore

    @property
    def kl_coef(self) -> float:
        return self.core.kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.core.kl_coef = value

    @property
    def ref_mode(self) -> str:
        """``"per_step"`` or ``"one_pass"``: how the reference scores the tokens (fixed when the env is built)."""
        return self.core.ref_mode

    def pass_counts(self) -> dict[str, int]:
        """The core's forward-pass counters (:meth:`TextGenCore.pass_counts`)."""
        return self.core.pass_counts()
