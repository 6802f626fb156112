"""pmoe-rl's mixture policies in stable-baselines3, written the way an SB3 user writes it: imports from
``pmoe_rl.sb3`` and stock SB3 calls only (train, save, load, evaluate).

    python examples/sb3_user.py --env Hopper-v5 --steps 20000
    python examples/sb3_user.py --checkpoint runs/Hopper-v5_sac_pmoe_s0_...   # a native run, opened in SB3
"""

import argparse
from pathlib import Path

from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from pmoe_rl.sb3 import PMOEPPO, PMOESAC, MixtureActorCriticPolicy, MixtureSACPolicy, from_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--out", default="sb3_models", help="folder for the saved zips")
    parser.add_argument("--checkpoint", help="also open this pmoe-rl run or checkpoint as an SB3 model")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)

    models = {
        "pmoe_sac": lambda env: PMOESAC("MlpPolicy", env, policy_kwargs=dict(n_experts=4), learning_starts=500),
        "sac_mixture_policy": lambda env: SAC(
            MixtureSACPolicy, env, policy_kwargs=dict(n_experts=4), learning_starts=500
        ),
        "ppo_mixture_policy": lambda env: PPO(
            MixtureActorCriticPolicy, env, policy_kwargs=dict(n_experts=4), n_steps=512
        ),
        "a2c_mixture_policy": lambda env: A2C(MixtureActorCriticPolicy, env, policy_kwargs=dict(n_experts=2)),
        "pmoe_ppo": lambda env: PMOEPPO("MlpPolicy", env, policy_kwargs=dict(n_experts=5), n_steps=512),
    }
    for name, make in models.items():
        env = make_vec_env(args.env, n_envs=1, seed=0)
        model = make(env)
        model.learn(total_timesteps=args.steps)
        model.save(out / name)
        loaded = type(model).load(out / name, env=env)
        mean, std = evaluate_policy(loaded, env, n_eval_episodes=5, deterministic=True)
        print(
            f"{name} ({type(loaded).__name__}, {loaded.policy.__class__.__name__}): return {mean:.1f} +/- {std:.1f}",
            flush=True,
        )

    if args.checkpoint:
        model = from_checkpoint(args.checkpoint)
        mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=5, deterministic=True)
        model.save(out / "from_checkpoint")
        print(
            f"{args.checkpoint} as {type(model).__name__}: return {mean:.1f} +/- {std:.1f}; "
            f"saved as {out / 'from_checkpoint.zip'}"
        )


if __name__ == "__main__":
    main()
