"""The one agent and what it needs: ``from agents import Agent, AgentConfig, RolloutCollector``.

:class:`Agent` (PPO, REINFORCE, RLOO, GRPO; one row each in :data:`ALGOS`), its config and the
:class:`Rollout` it learns from, and the :class:`RolloutCollector` that fills rollouts from any Gymnasium
vector env. Imports ``envs`` only, never ``runners``.
"""

from agents.agent import Agent
from agents.algos import ALGOS, AlgoSpec
from agents.config import AgentConfig, Rollout
from agents.rollout import EpisodeLog, RolloutCollector
from agents.turn_policy import TurnLMPolicy

__all__ = ["ALGOS", "Agent", "AgentConfig", "AlgoSpec", "EpisodeLog", "Rollout", "RolloutCollector", "TurnLMPolicy"]
