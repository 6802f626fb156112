"""One readable file per algorithm, each an :class:`~pmoe_rl.agents.runner.Agent` on the shared run skeleton:
``runner.train(AGENTS[algo], cfg, ctx)`` runs a training."""

from pmoe_rl.agents.imitation import Imitation
from pmoe_rl.agents.iql import IQL
from pmoe_rl.agents.odice import ODICE
from pmoe_rl.agents.offline import OfflineAgent
from pmoe_rl.agents.ppo import PPO
from pmoe_rl.agents.sac import SAC

AGENTS = {"sac": SAC, "ppo": PPO, "odice": ODICE, "iql": IQL, "bc": OfflineAgent, "imitate": Imitation}
