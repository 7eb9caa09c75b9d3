"""KL-penalty coefficient controllers (Ziegler et al. 2019, "Fine-Tuning Language Models from
Human Preferences", and TRL 0.11's PPOTrainer).

The adaptive controller moves β so that the per-episode KL between the policy and the
reference stays near a target:

    e = clip(KL / KL_target - 1, -0.2, 0.2)
    β ← β · (1 + e · n / horizon)

where ``n`` is the number of episodes (TRL: samples) behind the KL measurement.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FixedKLController:
    """β stays at ``value``."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


@dataclass
class AdaptiveKLController:
    """Adaptive β (defaults: TRL 0.11's init 0.2, target 6 nats, horizon 10000)."""

    value: float = 0.2
    target: float = 6.0
    horizon: float = 10000.0

    def __post_init__(self) -> None:
        if self.value < 0 or self.target <= 0 or self.horizon <= 0:
            raise ValueError(
                f"AdaptiveKLController needs value >= 0, target > 0 and horizon > 0; got "
                f"value={self.value}, target={self.target}, horizon={self.horizon}"
            )

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update β from the mean per-episode KL of ``n_steps`` episodes; returns the new β."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
