"""``python -m pmoe_rl.evaluate PATH``: evaluate a saved policy.

PATH is a run directory (its latest checkpoint), a checkpoint directory or a file in one. Runs N
complete episodes (deterministic unless ``--stochastic``), prints mean +- std return and how often each
expert acted; ``--json FILE`` writes the numbers, ``--video DIR`` records mp4s of the episodes,
``--analyze DIR`` writes expert-analysis plots and scores (see ``pmoe_rl.analysis``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pmoe_rl import checkpoint
from pmoe_rl.agents.build import load_policy
from pmoe_rl.cli import Parser, configure_cpu, entry_point
from pmoe_rl.config import from_dict
from pmoe_rl.datasets import normalized_score, reference_scores
from pmoe_rl.devices import resolve_device
from pmoe_rl.envs import make_env
from pmoe_rl.errors import ConfigError, EnvError
from pmoe_rl.evaluation import eval_seed, evaluate_policy


def _video_env(env_id: str, seed: int, folder: Path):
    import gymnasium as gym

    if os.environ.get("MUJOCO_GL") is None and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"
    try:
        import moviepy  # noqa: F401
    except ImportError:
        raise EnvError("--video needs moviepy: pip install 'pmoe-rl[video]'") from None
    env = None
    try:
        env = make_env(env_id, seed=seed, render_mode="rgb_array")
        env.reset(seed=seed)
        env.render()
    except EnvError:
        raise
    except Exception as exc:  # no OpenGL backend: EGL/OSMesa missing, no display, a bad MUJOCO_GL, ...
        if env is not None:
            env.close()
        raise EnvError(
            f"cannot render '{env_id}' for --video ({type(exc).__name__}: {exc}); on a headless CPU "
            "machine install OSMesa (apt-get install libosmesa6) and set MUJOCO_GL=osmesa "
            "PYOPENGL_PLATFORM=osmesa"
        ) from None
    return gym.wrappers.RecordVideo(env, str(folder), episode_trigger=lambda _: True, name_prefix="eval")


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m pmoe_rl.evaluate", description=__doc__.split("\n\n")[1])
    p.add_argument("path", help="run directory, checkpoint directory or checkpoint file")
    p.add_argument("--episodes", type=int, default=10, help="number of episodes (default: 10)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="evaluation seed (default: the run's seed + 1, the seed of the training run's own evaluations)",
    )
    p.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions instead of acting with the mean of the "
        "most probable expert (or, for runs with net.eval_expert=sample, of one drawn from the gate)",
    )
    p.add_argument("--env", help="evaluate on another env id with the same spaces (default: the run's env)")
    p.add_argument(
        "--device",
        default="cpu",
        help="auto, cpu, cuda or cuda:N, checked as train's; the episodes run on a CPU copy of the policy with a CPU "
        "generator, as the training run's own evaluations do, so the numbers match its eval/* (default: cpu)",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--video", metavar="DIR", help="record the episodes as mp4 files in DIR")
    p.add_argument(
        "--analyze",
        metavar="DIR",
        help="write expert-analysis PNGs (usage over episodes, experts' "
        "actions in 2-D, MultiGoal trajectories from the origin coloured by expert) and analysis.json "
        "to DIR",
    )
    args = p.parse_args(argv)
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    resolve_device(args.device)
    configure_cpu(0)
    policy, ckpt = load_policy(args.path)
    cfg = from_dict(ckpt.meta["config"])
    env_id = args.env or ckpt.meta["env_id"]
    seed = eval_seed(cfg.seed) if args.seed is None else args.seed
    for name, folder in (("video", args.video), ("analysis", args.analyze)):
        if folder and Path(folder).exists() and (not Path(folder).is_dir() or any(Path(folder).iterdir())):
            raise ConfigError(f"{name} directory {folder} is not empty; choose a new one (nothing is overwritten)")
    if args.video:
        env = _video_env(env_id, seed, Path(args.video))
    else:
        env = make_env(env_id, seed=seed)
    try:
        checkpoint.check_spaces(ckpt.meta, env.observation_space, env.unwrapped.action_space)
        result = evaluate_policy(policy, env, args.episodes, seed=seed, deterministic=not args.stochastic)
    finally:
        env.close()
    mode = "stochastic" if args.stochastic else "deterministic"
    print(f"{ckpt.path} (step {ckpt.step}) on {env_id}, {args.episodes} {mode} episodes, seed {seed}")
    print(
        f"return: {result.mean_return:.2f} +/- {result.std_return:.2f}  "
        f"(min {min(result.returns):.2f}, max {max(result.returns):.2f}); "
        f"mean length {sum(result.lengths) / len(result.lengths):.1f}"
    )
    print("expert usage: " + ", ".join(f"{k}: {u:.1%}" for k, u in enumerate(result.expert_usage)))
    out = result.to_json()
    scores = reference_scores(cfg.dataset) if cfg.dataset and env_id == ckpt.meta["env_id"] else None
    if scores is not None:  # an offline run: D4RL's normalised score from its dataset's references
        out["normalized_score"] = float(normalized_score(result.mean_return, *scores))
        print(f"normalized score: {out['normalized_score']:.1f} (dataset {cfg.dataset}: random {scores[0]:.1f}, "
              f"expert {scores[1]:.1f})")  # fmt: skip
    if args.json:
        checkpoint.write_text_atomic(Path(args.json), json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    if args.video:
        print(f"videos in {args.video}")
    if args.analyze:
        from pmoe_rl.analysis import analyze, describe

        summary = analyze(policy, env_id, Path(args.analyze), args.episodes, seed, not args.stochastic)
        print(f"{describe(summary)}; plots in {args.analyze}")
    return 0


_entry = entry_point(main)


if __name__ == "__main__":
    _entry()
