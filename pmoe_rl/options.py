"""The options' vocabulary, declared once: the allowed values of every choice (``Literal`` types) and the defaults
shared by the native agents, the configuration and the stable-baselines3 classes.

The config (:mod:`pmoe_rl.config`), the CLI's ``--help``, the estimators and the SB3 bridge all read these, so a
default changes in one place. Why each default is what it is: docs/algorithms.md.
"""

from __future__ import annotations

from typing import Literal

Algo = Literal["sac", "ppo", "odice", "iql", "bc", "imitate"]
OFFLINE_ALGOS = ("odice", "iql", "bc")  # trained on a dataset, not on environment steps
ImitationOptimizer = Literal["sso", "adam", "sgd"]
ImitationLoss = Literal["squared", "squashed"]
Learner = Literal["mlp", "linear"]
LearnerAction = Literal["sample", "mean"]
PolicyKind = Literal["pmoe", "gaussian", "moe", "mcp"]
GateInput = Literal["detached_latent", "obs"]
EvalExpert = Literal["argmax", "sample"]
ExpertUpdate = Literal["best", "all"]
GateLoss = Literal["mse", "ce"]
TargetLogp = Literal["component", "mixture"]
AlphaLogp = Literal["best", "mixture"]
PolicyLogp = Literal["component", "mixture"]
UpdateSample = Literal["selected", "fresh"]
SelectBy = Literal["sample", "mean"]
BehaviorExpert = Literal["sample", "argmax"]
MeanInit = Literal["small", "default"]
ScoreBaseline = Literal["experts", "batch", "none"]
Warmup = Literal["policy", "uniform"]
Ratio = Literal["mixture", "component"]
Activation = Literal["tanh", "relu"]
VecEnvMode = Literal["sync", "async"]
FDivergence = Literal["chi2", "kl"]  # O-DICE's f: Pearson chi-square or reverse KL
ValueUpdate = Literal["orthogonal", "true", "semi"]  # O-DICE's gradient of the value loss
ODICEWeight = Literal["official", "analytic"]  # O-DICE's chi-square policy weight: max(delta, 0) or (f')^-1(delta)
ActorUpdate = Literal["gradient", "sso"]  # SAC's actor step: one optimiser step, or target-based surrogate steps
SSOInner = Literal["adam", "armijo", "sgd"]  # the inner solver of pmoe_rl.sso
LRSchedule = Literal["auto", "constant", "cosine"]  # an offline policy's learning rate (auto: its official code's)
EtaSchedule = Literal["constant", "sqrt"]  # SSO's target-space step size: constant or eta / sqrt(t + 1)
# torch.compile of the update: off, or a torch.compile mode ("reduce-overhead" adds CUDA graphs on CUDA).
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]

# Number of experts: 4 in the official PMOE-SAC code, 5 in the co-author's PMOE-PPO script (docs/algorithms.md).
SAC_EXPERTS = 4
PPO_EXPERTS = 5
# Deterministic acting: the most probable expert's mean, a function of the observation (SB3's contract);
# "sample" draws the expert from the gate as the official evaluation does.
EVAL_EXPERT: EvalExpert = "argmax"
GATE_INPUT: GateInput = "detached_latent"
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
# The PMOE estimator: the official code's, except the two defaults marked (issue 15; configs/pmoe_sac_official.yaml
# restores the official ones).
EXPERT_UPDATE: ExpertUpdate = "best"
GATE_LOSS: GateLoss = "mse"
GATE_LOSS_WEIGHT = 1.0
TARGET_LOGP: TargetLogp = "component"
ALPHA_LOGP: AlphaLogp = "best"
# Not the official code's: k* chosen by the critic's value of each expert's mean action (the official per-sample
# choice is blind on Hopper: 0.58-0.61 of Gaussian SAC at 50k steps, 1.5x with "mean"), L_pi on a new draw of expert k*
# (unbiased; the official "selected" fails SB3's identity test) under k*'s own log-density (the official one; with
# "mean", the mixture's fails the identity test). docs/pmoe_diagnosis.md.
POLICY_LOGP: PolicyLogp = "component"
UPDATE_SAMPLE: UpdateSample = "fresh"
SELECT_BY: SelectBy = "mean"
BEHAVIOR_EXPERT: BehaviorExpert = "sample"
MEAN_INIT: MeanInit = "small"  # the official U(+-1e-3) mean head
# The baseline estimators (their papers' settings are unknown; docs/algorithms.md).
GUMBEL_TAU = 1.0
GUMBEL_HARD = True
SCORE_BASELINE: ScoreBaseline = "experts"
# PMOE-PPO's auxiliary Q(s, a) (co-author script).
Q_HIDDEN = (64, 64, 64)
Q_COEF = 1.0
# Clip of normalised observations (SB3 VecNormalize).
OBS_CLIP = 10.0
