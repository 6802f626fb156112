"""One readable file per algorithm. ``TRAINERS[algo](cfg, ctx)`` runs a training."""

from pmoe_rl.agents import ppo, sac

TRAINERS = {"sac": sac.train, "ppo": ppo.train}
