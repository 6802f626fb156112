"""MultiGoal: the 2-D point mass with four goals of soft Q-learning (Haarnoja, Tang, Abbeel, Levine, ICML 2017),
the standard picture of a multimodal policy (source of truth:
``rail-berkeley/softlearning: softlearning/environments/gym/multi_goal.py``).

State: the position in [-7, 7]^2, starting near the origin (N(0, 0.1^2 I)). Action: a velocity in [-1, 1]^2;
the next position is position + action, clipped to the box. Reward on the new position p and the clipped
action a: ``-30 ||a||^2 - min_g ||p - g||^2``, plus 10 when a goal is within 1.0, which ends the episode.
Goals: (5, 0), (-5, 0), (0, 5), (0, -5). The horizon is 30 steps (the soft Q-learning experiments'
``max_path_length``), fixed for every comparison in this package. ``info["goal"]`` is the index of the goal
reached (-1 while none is). ``render()`` (``rgb_array``) draws the plane, the goals and the episode's path.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

GOALS = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
HORIZON = 30


class MultiGoalEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        goal_reward: float = 10.0,
        actuation_cost_coeff: float = 30.0,
        distance_cost_coeff: float = 1.0,
        init_sigma: float = 0.1,
        goal_threshold: float = 1.0,
    ):
        self.render_mode = render_mode
        self.goal_reward, self.actuation_cost_coeff = goal_reward, actuation_cost_coeff
        self.distance_cost_coeff, self.init_sigma, self.goal_threshold = distance_cost_coeff, init_sigma, goal_threshold
        self.xlim = self.ylim = (-7.0, 7.0)
        self.observation_space = spaces.Box(-7.0, 7.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.position = np.zeros(2)
        self.path: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = np.clip(self.init_sigma * self.np_random.standard_normal(2), -7.0, 7.0)
        self.path = [self.position.copy()]
        return self.position.astype(np.float32), {"goal": -1}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.position = np.clip(self.position + action, -7.0, 7.0)
        self.path.append(self.position.copy())
        distances = np.linalg.norm(GOALS - self.position, axis=1)
        reward = -self.actuation_cost_coeff * float(action @ action) - self.distance_cost_coeff * float(
            distances.min() ** 2
        )
        reached = bool(distances.min() < self.goal_threshold)
        if reached:
            reward += self.goal_reward
        info = {"goal": int(distances.argmin()) if reached else -1}
        return self.position.astype(np.float32), reward, reached, False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 4), dpi=80)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        draw_plane(ax)
        path = np.array(self.path)
        ax.plot(path[:, 0], path[:, 1], "b.-", lw=1)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def draw_plane(ax) -> None:
    """Cost contours, the four goals (with their reach radius) and the start, on a matplotlib axis."""
    from matplotlib.patches import Circle

    xs = np.linspace(-7, 7, 100)
    xx, yy = np.meshgrid(xs, xs)
    cost = np.min([(xx - gx) ** 2 + (yy - gy) ** 2 for gx, gy in GOALS], axis=0)
    ax.contour(xx, yy, cost, levels=12, colors="0.8", linewidths=0.6)
    for k, (gx, gy) in enumerate(GOALS):
        ax.add_patch(Circle((gx, gy), 1.0, color="g", alpha=0.3))
        ax.text(gx, gy, f"G{k}", ha="center", va="center", fontsize=8)
    ax.plot(0, 0, "k+")
    ax.set_xlim(-7, 7)
    ax.set_ylim(-7, 7)
    ax.set_aspect("equal")
