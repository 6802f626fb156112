"""``python -m pmoe_rl.imitate``: online imitation learning from a pmoe-rl expert, the SSO paper's setting
(docs/sso.md): rounds of environment steps labelled by the expert, one update per round on that round's states,
by target-based surrogate optimisation (SSO) or plain Adam / SGD steps.

Examples::

    python -m pmoe_rl.imitate --expert runs/hopper_expert                        # SSO, m = 10, DAgger-style
    python -m pmoe_rl.imitate --expert runs/hopper_expert --beta 1               # behaviour cloning, expert states
    python -m pmoe_rl.imitate --expert runs/hopper_expert --optimizer adam --inner-steps 1   # one Adam step a round
    python -m pmoe_rl.imitate --resume runs/Hopper-v5_imitate_sso_s0_... --rounds 100

A run directory like ``train``'s (config, logs with ``time/expert_queries``, checkpoints): evaluate the learner with
``python -m pmoe_rl.evaluate RUN_DIR``; every option is also ``--set imitation.KEY=VALUE`` or YAML.
"""

from __future__ import annotations

from pmoe_rl import train
from pmoe_rl.cli import entry_point

DEFAULT_ROUNDS = 50  # the SSO paper's imitation sweep

# evaluate and log after every round (one iteration advances samples_per_round steps)
BASE = {"algo": "imitate", "eval_every": 1, "log_every": 1}
# the run-level options that imitation does not use; its own are the imitation.* section's, as flags
EXCLUDED = ("algo", "dataset", "policy", "estimator", "experts", "num_envs", "vec_env", "compile",
            "record_transitions", "steps")  # fmt: skip


def build_parser():
    p = train.build_parser(
        prog="python -m pmoe_rl.imitate",
        description="Online imitation learning from a pmoe-rl expert checkpoint (behaviour cloning with --beta 1, "
        "DAgger-style with --beta 0): each round collects --samples-per-round steps, labels every state with the "
        "expert's mean action and updates a tanh-Gaussian learner on them with SSO (one expert gradient, "
        "--inner-steps surrogate steps) or Adam / SGD. Evaluates the learner after every round.",
        section="imitation",
        exclude=EXCLUDED,
        base=BASE,
    )
    p.add_argument("--rounds", type=int, metavar="R",
                   help=f"rounds to run: --steps is R x samples_per_round (default: {DEFAULT_ROUNDS}; when "
                   "resuming, the saved budget)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.rounds is None and not args.resume:
        args.rounds = DEFAULT_ROUNDS
    rounds = args.rounds
    steps = None if rounds is None else (lambda cfg: rounds * cfg.imitation.samples_per_round)
    return train.run(args, BASE, steps)


_entry = entry_point(main)


if __name__ == "__main__":
    _entry()
