"""Run configuration: every option declared once, as a typed field with its default and a one-line doc.

The fields are pydantic models: their types (``Literal[...]`` for choices, constrained numbers) validate every
source of values alike — defaults, a YAML file (``--config``), the named CLI flags and ``--set key=value``
overrides (precedence in that order) — and the CLI's flags and ``--help`` are generated from them
(:mod:`pmoe_rl.train`). :func:`validate` adds the checks that involve several fields and resolves what
depends on others (the number of experts), so a run's ``config.yaml`` holds the values actually used.
Defaults follow the official code (docs/algorithms.md); the constants shared with the SB3 classes live in
:mod:`pmoe_rl.options`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
)

from pmoe_rl import options
from pmoe_rl.devices import parse_device
from pmoe_rl.errors import ConfigError
from pmoe_rl.estimators import ESTIMATORS

Sizes = Annotated[list[PositiveInt], Field(min_length=1)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """A group of options: unknown keys are refused, every assignment is validated, and each field's docstring
    is its help text."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise config_error(exc) from None


class NetConfig(Section):
    """SAC's policy network; PPO's is under ``ppo.*``. ``eval_expert`` applies to both."""

    hidden: Sizes = [256, 256]
    """hidden sizes of the SAC policy's shared trunk (ReLU)"""
    log_std_min: float = options.LOG_STD_MIN
    """lower clamp of the state-dependent log-std"""
    log_std_max: float = options.LOG_STD_MAX
    """upper clamp of the state-dependent log-std"""
    gate_input: options.GateInput = options.GATE_INPUT
    """gate input: the detached trunk features (official) or the raw observation (co-author script)"""
    mean_init: options.MeanInit = options.MEAN_INIT
    """SAC mixture (K > 1): the mean head's initialisation, U(+-1e-3) (small, official: every expert starts at the same
    action) or PyTorch's nn.Linear default (default: the experts start at different actions)"""
    eval_expert: options.EvalExpert = options.EVAL_EXPERT
    """deterministic acting: the mean of the most probable expert (argmax) or of one drawn from the gate (sample,
    the official evaluation)"""


class SACConfig(Section):
    """SAC and its actor-loss estimators; defaults from the official PMOE-SAC code except update_sample and
    select_by (configs/pmoe_sac_official.yaml)."""

    actor_lr: PositiveFloat = 3e-4
    """Adam learning rate of the policy (and gate)"""
    critic_lr: PositiveFloat = 3e-4
    """Adam learning rate of the twin critics"""
    alpha_lr: PositiveFloat = 3e-4
    """Adam learning rate of log alpha (ent_coef=auto)"""
    critic_hidden: Sizes = [256, 256]
    """hidden sizes of each Q network (ReLU)"""
    batch_size: PositiveInt = 256
    """minibatch size"""
    buffer_size: PositiveInt = 1_000_000
    """replay capacity (transitions)"""
    gamma: Probability = 0.99
    """discount factor"""
    tau: Annotated[float, Field(gt=0.0, le=1.0)] = 0.005
    """Polyak coefficient of the target critics"""
    target_update_interval: PositiveInt = 1
    """updates between target-critic updates"""
    reward_scale: NonNegativeFloat = 1.0
    """rewards are multiplied by this in the critic target"""
    learning_starts: NonNegativeInt = 1000
    """environment steps before the first update"""
    warmup: options.Warmup = "policy"
    """actions before learning_starts: the initial policy (official rlkit) or uniform random (SB3)"""
    train_freq: PositiveInt = 1
    """environment steps between updates"""
    gradient_steps: PositiveInt = 1
    """updates each time"""
    ent_coef: Literal["auto"] | NonNegativeFloat = "auto"
    """temperature alpha: auto (learned, initialised to init_alpha) or a fixed number"""
    init_alpha: PositiveFloat = 1.0
    """initial temperature when ent_coef=auto"""
    target_entropy: Literal["auto"] | float = "auto"
    """entropy target of the temperature loss: auto = -action_dim"""
    target_logp: options.TargetLogp = options.TARGET_LOGP
    """log pi in the critic target: of the expert k' ~ Cat(w) that produced a' (component) or the mixture's"""
    expert_update: options.ExpertUpdate = options.EXPERT_UPDATE
    """estimator pmoe: update the critic's favourite expert only (best) or every expert (all)"""
    gate_loss: options.GateLoss = options.GATE_LOSS
    """estimator pmoe: gate loss toward the best expert, mean squared (mse) or cross-entropy (ce)"""
    gate_loss_weight: NonNegativeFloat = options.GATE_LOSS_WEIGHT
    """estimator pmoe: weight of the gate loss"""
    alpha_logp: options.AlphaLogp = options.ALPHA_LOGP
    """estimator pmoe: log pi in the temperature loss, of the best expert (best) or the mixture's"""
    update_sample: options.UpdateSample = options.UPDATE_SAMPLE
    """PMOE: the sample the best expert is updated on: the one that won the choice of k* (selected, official) or a new
    draw of expert k* (fresh, default: the noise is not conditioned on the critic; docs/pmoe_diagnosis.md)"""
    policy_logp: options.PolicyLogp = options.POLICY_LOGP
    """PMOE: log pi in the actor loss L_pi: of each sample's own expert (component, official and default) or the
    mixture's (mixture: overlapping experts are penalised, which pushes them apart)"""
    select_by: options.SelectBy = options.SELECT_BY
    """PMOE: what the critic compares to choose the best expert k*: each expert's sampled action (sample, official) or
    its mean action (mean, default: the choice is not decided by the noise; docs/pmoe_diagnosis.md)"""
    behavior_expert: options.BehaviorExpert = options.BEHAVIOR_EXPERT
    """mixture policies: the expert that acts while training and draws a' in the critic's target: one drawn from the
    gate at every step (sample, official) or the gate's most probable (argmax: the behaviour switches expert only
    where the gate's ranking changes; docs/pmoe_diagnosis.md)"""
    gumbel_tau: PositiveFloat = options.GUMBEL_TAU
    """estimator gumbel: Gumbel-Softmax temperature"""
    gumbel_hard: bool = options.GUMBEL_HARD
    """estimator gumbel: straight-through one-hot (the action is one expert's sample); false mixes the experts'
    samples (diverged on MultiGoal-v0)"""
    score_baseline: options.ScoreBaseline = options.SCORE_BASELINE
    """estimator score: baseline of the score-function term, sum_k w_k f(a_k) (experts), the batch mean, or none"""
    actor_update: options.ActorUpdate = "gradient"
    """actor step: one Adam step on the estimator's loss (gradient), or target-based surrogate optimisation (sso,
    docs/sso.md): one critic gradient with respect to the policy's outputs, then sso_inner_steps cheap steps"""
    sso_inner_steps: PositiveInt = 10
    """actor_update=sso: inner steps m on the surrogate per update (m=1 with sso_inner=adam is the gradient step)"""
    sso_eta: PositiveFloat = 0.1
    """actor_update=sso: target-space step size eta (per state; the policy's means, log-stds and log gate weights)"""
    sso_eta_schedule: options.EtaSchedule = "constant"
    """actor_update=sso: eta constant or eta / sqrt(t + 1) at update t"""
    sso_inner: options.SSOInner = "adam"
    """actor_update=sso: inner solver, Adam at actor_lr (its state kept; no host read), Armijo line search (starts at
    step 1, one host read per trial) or SGD at actor_lr"""


class PPOConfig(Section):
    """PPO with Gaussian or mixture policies: the standard MuJoCo PPO settings (SB3's defaults, CleanRL's
    ppo_continuous_action); network, normalisation and PMOE-PPO parts from the co-author script."""

    n_steps: PositiveInt = 2048
    """rollout length per environment"""
    n_epochs: PositiveInt = 10
    """passes over each rollout"""
    batch_size: PositiveInt = 64
    """minibatch size"""
    learning_rate: PositiveFloat = 3e-4
    """Adam learning rate"""
    anneal_lr: bool = False
    """decay the learning rate linearly to 0 over the run (CleanRL) instead of keeping it constant (SB3)"""
    adam_eps: PositiveFloat = 1e-5
    """Adam epsilon"""
    gamma: Probability = 0.99
    """discount factor"""
    gae_lambda: Probability = 0.95
    """GAE lambda"""
    clip_range: PositiveFloat = 0.2
    """PPO clip epsilon (ratio and, with clip_value, value)"""
    clip_value: bool = True
    """clipped value loss, the max of clipped and unclipped (CleanRL, co-author script)"""
    normalize_advantage: bool = True
    """normalise the advantages per minibatch"""
    ent_coef: NonNegativeFloat = 0.0
    """entropy bonus weight; the entropy is estimated as -log pi(a|s)"""
    vf_coef: NonNegativeFloat = 0.5
    """value loss weight"""
    max_grad_norm: NonNegativeFloat = 0.5
    """gradient-norm clip (policy and value together; the auxiliary Q on its own)"""
    target_kl: PositiveFloat | None = None
    """stop an update's epochs once the approximate KL exceeds 1.5 x this (null: never)"""
    hidden: Sizes = [64, 64]
    """hidden sizes of the policy MLP (orthogonal init)"""
    value_hidden: Sizes = [64, 64]
    """hidden sizes of the value MLP"""
    activation: options.Activation = "tanh"
    """activation of the policy and value MLPs"""
    log_std_init: float = 0.0
    """initial state-independent log-std, one per expert and action dimension"""
    norm_obs: bool = True
    """running observation normalisation (its statistics are saved with the policy)"""
    norm_reward: bool = True
    """divide rewards by the running std of the discounted return"""
    clip_obs: PositiveFloat = 10.0
    """clip of the normalised observations"""
    clip_reward: PositiveFloat = 10.0
    """clip of the normalised rewards"""
    ratio: options.Ratio = "mixture"
    """density of the PPO ratio: the mixture's (co-author script) or the acting expert's (component)"""
    q_hidden: Sizes = list(options.Q_HIDDEN)
    """PMOE-PPO: hidden sizes of the auxiliary Q(s, a) (ReLU)"""
    q_coef: NonNegativeFloat = options.Q_COEF
    """PMOE-PPO: weight of the auxiliary Q loss"""
    gate_loss: options.GateLoss = options.GATE_LOSS
    """PMOE-PPO: gate loss toward argmax_k Q(s, a_k), mean squared (mse) or cross-entropy (ce)"""
    gate_loss_weight: NonNegativeFloat = options.GATE_LOSS_WEIGHT
    """PMOE-PPO: weight of the gate loss (0: a plain mixture PPO)"""


class OfflineConfig(Section):
    """The offline agents (odice, iql, bc): how the dataset is read and the networks they share; defaults from the
    official O-DICE code (docs/offline.md)."""

    batch_size: PositiveInt = 256
    """minibatch size"""
    gamma: Probability = 0.99
    """discount factor"""
    tau: Annotated[float, Field(gt=0.0, le=1.0)] = 0.005
    """Polyak coefficient of the target networks (every step)"""
    value_hidden: Sizes = [256, 256]
    """hidden sizes of V (and IQL's twin Q), ReLU"""
    normalize_reward: bool = True
    """scale rewards by 1000 / (max - min) of the dataset's episode returns (IQL and O-DICE on MuJoCo)"""
    normalize_obs: bool = False
    """normalise observations by the dataset's mean and std (saved with the policy): O-DICE's imitation setting and
    CORL's default, off in the official offline-RL code; on the HalfCheetah-v5 datasets made by collect it changes
    20k-step scores more than any other option measured (docs/offline.md)"""
    max_weight: PositiveFloat = 100.0
    """clip of the behaviour-cloning weights (EXP_ADV_MAX of IQL and O-DICE)"""
    actor_lr_schedule: options.LRSchedule = "auto"
    """the policy's learning rate: constant, or decayed to 0 on a cosine over the run's --steps (IQL's schedule); auto
    is each official code's: cosine for IQL, constant for O-DICE and BC"""
    log_std_min: float = -5.0
    """lower clamp of the policy's state-independent log-std"""
    log_std_max: float = 2.0
    """upper clamp of the policy's state-independent log-std"""
    imitation: bool = False
    """offline imitation: zero the rewards and keep the first imitation_episodes episodes (O-DICE section 9)"""
    imitation_episodes: PositiveInt = 1
    """imitation: the number of expert episodes kept"""


class ODICEConfig(Section):
    """O-DICE (Mao et al., ICLR 2024): V-DICE value objective with an orthogonal-gradient update, then weighted
    behaviour cloning; defaults from the official code's offline-RL settings."""

    lam: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.6
    """lambda: (1 - lambda) E[V(s)] + lambda E[f*(r + gamma V(s') - V(s))]"""
    eta: NonNegativeFloat = 1.0
    """weight of the orthogonal (backward) gradient"""
    f: options.FDivergence = "chi2"
    """f-divergence: Pearson chi-square (policy weights: ``weight``) or reverse KL (weights exp(delta - 1))"""
    weight: options.ODICEWeight = "official"
    """chi-square policy weight: official, the code's max(delta, 0); analytic, the derivation's (f')^-1(delta) =
    max(delta / 2 + 1, 0), the DICE ratio d*/d^D (goes beyond the code; reverse KL's exp(delta - 1) is both)"""
    update: options.ValueUpdate = "orthogonal"
    """gradient of the value loss: orthogonal (O-DICE), true (both directions) or semi (target V(s') only)"""
    layer_norm: bool = True
    """LayerNorm after each hidden layer of V"""

    @field_validator("update", mode="before")
    @classmethod
    def _true_is_a_name(cls, value: Any) -> Any:
        return "true" if value is True else value  # --set odice.update=true reads as YAML's boolean

    twin_v: bool = True
    """two V heads: both trained, the minimum as the target"""
    value_lr: PositiveFloat = 2e-4
    """Adam learning rate of V"""
    actor_lr: PositiveFloat = 2e-4
    """Adam learning rate of the policy"""
    actor_weight_decay: NonNegativeFloat = 1e-4
    """weight decay of the policy's Adam"""
    policy_hidden: Sizes = [1024, 1024]
    """hidden sizes of the policy (ReLU)"""
    tanh_mean: bool = False
    """squash the policy's mean with tanh (the official offline-RL code: no; its imitation setting: yes)"""


class IQLConfig(Section):
    """IQL (Kostrikov, Nair, Levine, ICLR 2022): expectile V, twin Q, advantage-weighted extraction; its MuJoCo
    settings."""

    expectile: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.7
    """tau of the expectile regression of V onto min Q"""
    temperature: PositiveFloat = 3.0
    """beta of the extraction weights exp(beta (Q - V))"""
    value_lr: PositiveFloat = 3e-4
    """Adam learning rate of V"""
    critic_lr: PositiveFloat = 3e-4
    """Adam learning rate of the twin Q"""
    actor_lr: PositiveFloat = 3e-4
    """Adam learning rate of the policy (decayed to 0 on a cosine over the run: offline.actor_lr_schedule)"""
    policy_hidden: Sizes = [256, 256]
    """hidden sizes of the policy (ReLU)"""
    tanh_mean: bool = True
    """squash the policy's mean with tanh (IQL's official code and CORL; the Gaussian around it is not squashed)"""


class BCConfig(Section):
    """Behaviour cloning: maximum likelihood of the dataset's actions (every weight 1)."""

    actor_lr: PositiveFloat = 3e-4
    """Adam learning rate of the policy"""
    policy_hidden: Sizes = [256, 256]
    """hidden sizes of the policy (ReLU)"""
    tanh_mean: bool = False
    """squash the policy's mean with tanh"""


class ImitationConfig(Section):
    """Online imitation learning from an expert checkpoint (python -m pmoe_rl.imitate, docs/sso.md): rounds of
    samples_per_round environment steps, every state labelled with the expert's mean action, one update per round on
    that round's states only; settings of the SSO paper's MuJoCo experiments."""

    expert: str = ""
    """the expert: a pmoe-rl run directory or checkpoint (any algorithm; it acts with its deterministic action)"""
    beta: Probability = 0.0
    """probability that the expert acts at a step (1: behaviour cloning on the expert's states; 0: DAgger-style,
    the learner's sampled actions); the first round is the expert's"""
    learner_action: options.LearnerAction = "sample"
    """how the learner acts when the expert does not: a sampled action (paper; the loss trains only the mean, so the
    spread stays the initial one, std 1 before the tanh) or its deterministic mean action"""
    samples_per_round: PositiveInt = 1000
    """environment steps (and expert labels) per round"""
    optimizer: options.ImitationOptimizer = "sso"
    """the update per round: sso (one target gradient, inner_steps surrogate steps), adam or sgd (inner_steps plain
    steps on the round's loss: 1 is the paper's online baselines, m the fair baseline)"""
    inner_steps: PositiveInt = 10
    """steps per round: SSO's inner steps m, or adam/sgd steps on the round's batch"""
    lr: PositiveFloat = 1e-3
    """learning rate of adam and sgd, and of SSO's inner Adam (sso_inner=adam)"""
    eta: PositiveFloat = 0.5
    """SSO: target-space step size per state (0.5 = 1/L of the squared loss: the official code's eta_code=1 lands the
    target step on the expert's labels)"""
    eta_schedule: options.EtaSchedule = "constant"
    """SSO: eta constant or eta / sqrt(t + 1) at round t"""
    sso_inner: options.SSOInner = "adam"
    """SSO: inner solver, Adam at lr (its state kept; the official SSO_SLS and AdaOGD variants' inner solver), Armijo
    line search (the official SSO_OGD's; starts at step 1 each round; it fits an MLP learner more slowly,
    BENCHMARKS.md) or SGD at lr"""
    loss: options.ImitationLoss = "squashed"
    """per-state loss on the learner's pre-tanh mean mu: ||tanh(mu) - a*||^2 (squashed: the action the learner takes)
    or ||mu - a*||^2 (squared, the paper's: the learner then acts tanh(a*), at most 0.76 in each dimension)"""
    learner: options.Learner = "mlp"
    """the learner, a tanh-Gaussian policy: an MLP (hidden, ReLU) or linear in the observation"""
    hidden: Sizes = [256, 256]
    """learner=mlp: hidden sizes (the paper's: 2048, 2048)"""


class Config(Section):
    """A training run. The top-level fields are the CLI's named flags; the sections are set with --set or YAML."""

    env: str = ""
    """gymnasium id, e.g. Hopper-v5, HalfCheetah-v5, InvertedPendulum-v5, pmoe_rl/MultiGoal-v0 (required; offline runs
    default to the dataset's, imitation to the expert's)"""
    algo: options.Algo = "sac"
    """algorithm: online sac, ppo; offline (on --dataset) odice, iql, bc; imitate (online imitation of
    imitation.expert, python -m pmoe_rl.imitate)"""
    dataset: str = ""
    """offline algorithms: a local Minari dataset, by id (under MINARI_DATASETS_PATH) or directory; --env defaults
    to the dataset's"""
    policy: options.PolicyKind | None = None
    """pmoe: Gaussian mixture (SAC: trained by the estimator; PPO: mixture ratio + auxiliary Q and gate loss;
    offline: extracted by weighted behaviour cloning); gaussian: one Gaussian (plain SAC / PPO); moe / mcp (SAC):
    one Gaussian composed from K primitives by a gated mixture of experts / a multiplicative compositional
    policy (unset: pmoe online, gaussian offline as the papers)"""
    estimator: str = "pmoe"
    """actor-loss estimator of a SAC mixture policy, by its registered name (docs/algorithms.md explains each;
    pmoe_rl.register_estimator adds one)"""
    experts: PositiveInt | None = None
    """number of experts K (unset: 1 for gaussian; 4 with SAC, the official code; 5 with PPO, the co-author
    script); config.yaml stores the number used"""
    seed: int = 0
    """seed of the environments, torch, numpy and Python"""
    steps: PositiveInt = Field(1_000_000, json_schema_extra={"resumable": True})
    """total environment steps (PPO: rounded up to whole rollouts)"""
    device: str = Field("auto", json_schema_extra={"resumable": True})
    """auto (CUDA when available, except for PPO: the CPU), cpu, cuda or cuda:N"""
    threads: NonNegativeInt = Field(0, json_schema_extra={"resumable": True})
    """torch CPU threads; 0 = the measured default (BENCHMARKS.md)"""
    eval_every: NonNegativeInt = Field(10_000, json_schema_extra={"resumable": True})
    """environment steps between evaluations (imitation: 1 = after every round); 0 = never"""
    eval_episodes: PositiveInt = Field(10, json_schema_extra={"resumable": True})
    """episodes per evaluation"""
    checkpoint_every: NonNegativeInt = Field(50_000, json_schema_extra={"resumable": True})
    """environment steps between checkpoints; 0 = only at the end"""
    log_every: PositiveInt = Field(5_000, json_schema_extra={"resumable": True})
    """environment steps between log dumps (stdout table, CSV, TensorBoard, JSON)"""
    stop_at_reward: float | None = Field(None, json_schema_extra={"resumable": True})
    """stop once an evaluation's mean return reaches this (default: never)"""
    compile: options.CompileMode = Field("off", json_schema_extra={"resumable": True, "flag_const": "default"})
    """torch.compile the update (SAC: each gradient step; PPO: each minibatch's loss and backward); --compile alone
    is "default"; "reduce-overhead" also captures CUDA graphs on CUDA. Same maths; compiled kernels draw other
    random numbers than eager ones. The first updates wait for the compilation (about a minute on a CPU)"""
    record_transitions: bool = Field(False, json_schema_extra={"flag_const": True})
    """record every transition collected (RUN_DIR/transitions/, written at each checkpoint) for python -m
    pmoe_rl.collect's medium-replay datasets"""
    num_envs: PositiveInt = 1
    """parallel environments (PPO only)"""
    vec_env: options.VecEnvMode = Field("sync", json_schema_extra={"resumable": True})
    """sync: all environments in this process; async: one subprocess each"""
    net: NetConfig = Field(default_factory=NetConfig)
    sac: SACConfig = Field(default_factory=SACConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    offline: OfflineConfig = Field(default_factory=OfflineConfig)
    odice: ODICEConfig = Field(default_factory=ODICEConfig)
    iql: IQLConfig = Field(default_factory=IQLConfig)
    bc: BCConfig = Field(default_factory=BCConfig)
    imitation: ImitationConfig = Field(default_factory=ImitationConfig)

    @field_validator("estimator")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in ESTIMATORS:
            close = difflib.get_close_matches(name, list(ESTIMATORS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown estimator '{name}'{hint}; choose from {', '.join(ESTIMATORS)}")
        return name

    @property
    def resolved_policy(self) -> str:
        """``policy``, or its default for the algorithm."""
        return self.policy or ("gaussian" if self.algo in (*options.OFFLINE_ALGOS, "imitate") else "pmoe")

    @property
    def n_experts(self) -> int:
        """The number of experts used: ``experts``, or the default for the policy and algorithm."""
        if self.experts is not None:
            return self.experts
        if self.resolved_policy == "gaussian":
            return 1
        return options.PPO_EXPERTS if self.algo == "ppo" else options.SAC_EXPERTS


def is_section(annotation: Any) -> bool:
    """Whether a field's type is a group of options (``net``, ``sac``, ``ppo``) rather than one option."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def resumable(name: str) -> bool:
    """Whether a top-level option may change when a run is resumed (the others must match its config)."""
    extra = Config.model_fields[name].json_schema_extra
    return bool(extra and extra.get("resumable"))


# --- errors ----------------------------------------------------------------------------------------------------


def _field_path(loc: tuple) -> tuple[str, type[BaseModel] | None, str]:
    """Split a pydantic error location into the dotted option name, the section that holds the last field
    (None past the fields, e.g. in a list) and what follows (list indices)."""
    model: Any = Config
    names, rest = [], ""
    for part in loc:
        if isinstance(part, str) and model is not None and part in model.model_fields:
            names.append(part)
            ann = model.model_fields[part].annotation
            model = ann if is_section(ann) else None
        elif isinstance(part, int):
            rest += f"[{part}]"
        elif model is not None and isinstance(part, str):  # an unknown key
            names.append(part)
            return ".".join(names), model, rest
    return ".".join(names), model, rest


def config_error(exc: ValidationError) -> ConfigError:
    """One readable line for the first invalid option of a pydantic error (a union's alternatives joined)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    name, model, rest = _field_path(first["loc"])
    if first["type"] == "extra_forbidden":
        valid = list((model or Config).model_fields)
        close = difflib.get_close_matches(name.rsplit(".", 1)[-1], valid, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(valid)}"
        return ConfigError(f"unknown config key '{name}'{hint}")
    messages = []
    for e in errors:
        msg = e["msg"].removeprefix("Value error, ").replace("Input should", "should")
        if _field_path(e["loc"])[0] == name and msg not in messages:
            messages.append(msg)
    return ConfigError(f"{name}{rest}: {' or '.join(messages)} (got {first['input']!r})")


# --- building a config -----------------------------------------------------------------------------------------


def _merge(base: dict, values: dict) -> dict:
    out = dict(base)
    for key, value in values.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_dict(cfg: Config, values: dict) -> Config:
    """A new config: ``cfg`` with the (nested) ``values`` applied, every value validated."""
    if not isinstance(values, dict):
        raise ConfigError(f"config values must be a mapping of keys to values, got {values!r}")
    try:
        return Config.model_validate(_merge(cfg.model_dump(), values))
    except ValidationError as exc:
        raise config_error(exc) from None


def parse_value(raw: str) -> Any:
    """A command-line value read as YAML (``[64,64]`` a list, ``true`` a boolean); text that is not YAML stays text."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def set_value(cfg: Config, assignment: str) -> Config:
    """``cfg`` with one ``--set key=value`` override; the value is parsed as YAML (``sac.batch_size=512``)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (for example sac.batch_size=512), got '{assignment}'")
    return apply_dict(cfg, nested(key.strip(), parse_value(raw)))


def nested(key: str, value: Any) -> dict:
    """A dotted key's value as nested config values: ``nested("sac.gamma", 0.9)`` -> ``{"sac": {"gamma": 0.9}}``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file; a missing, unreadable or malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


# Options added after runs had been saved, with the value those runs used: a saved config without one ran with it,
# whatever today's default is (resume, evaluate and the SB3 conversion must not change a run's method).
SAVED_BEFORE = {
    "sac": {"update_sample": "selected", "policy_logp": "component", "select_by": "sample"},
    "iql": {"tanh_mean": False},
}


def from_dict(values: dict) -> Config:
    """A saved run's config (its config.yaml, a checkpoint's metadata) as a Config."""
    values = dict(values)
    for section, used in SAVED_BEFORE.items():
        if isinstance(values.get(section), dict):
            values[section] = {**used, **values[section]}
    return apply_dict(Config(), values)


def load_run_config(run_dir: str | Path) -> Config:
    """A run directory's saved config.yaml as a Config (through :func:`from_dict`); an invalid one is a ConfigError
    that names the file."""
    path = Path(run_dir) / "config.yaml"
    values = load_yaml(path)
    try:
        return from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(cfg: Config) -> dict:
    return cfg.model_dump()


def validate(cfg: Config) -> Config:
    """Check the combinations of options, resolve the number of experts in place, and return ``cfg``.

    Each field's own type and range were checked when it was set."""
    if cfg.algo == "imitate":
        if not cfg.imitation.expert:
            raise ConfigError("--algo imitate learns from an expert: pass --expert RUN_DIR (imitation.expert)")
        if cfg.resolved_policy != "gaussian":
            raise ConfigError(f"--algo imitate trains a gaussian learner, not --policy {cfg.policy}")
        if cfg.record_transitions:
            raise ConfigError("--record-transitions records SAC and PPO runs, not --algo imitate")
    if not cfg.env:
        raise ConfigError("no environment given: pass --env ENV_ID (for example --env Hopper-v5)")
    cfg.policy = cfg.resolved_policy
    if cfg.algo in options.OFFLINE_ALGOS:
        if not cfg.dataset:
            raise ConfigError(f"--algo {cfg.algo} learns from a dataset: pass --dataset ID_OR_DIR")
        if cfg.policy not in ("gaussian", "pmoe"):
            raise ConfigError(f"--algo {cfg.algo} extracts a gaussian or pmoe policy, not {cfg.policy}")
        if cfg.offline.log_std_min >= cfg.offline.log_std_max:
            raise ConfigError("offline.log_std_min must be smaller than offline.log_std_max")
        if cfg.record_transitions:
            raise ConfigError(f"--record-transitions records an online run's collection, not --algo {cfg.algo}'s")
    elif cfg.dataset:
        raise ConfigError(f"--dataset is for the offline algorithms (odice, iql, bc), not --algo {cfg.algo}")
    if cfg.estimator != "pmoe" and (cfg.algo != "sac" or cfg.policy != "pmoe"):
        raise ConfigError(f"--estimator {cfg.estimator} trains a mixture policy with SAC (--algo sac --policy pmoe)")
    if cfg.policy in ("moe", "mcp") and cfg.algo != "sac":
        raise ConfigError(f"--policy {cfg.policy} is a SAC policy head; use --algo sac")
    if cfg.policy in ("moe", "mcp") and cfg.n_experts < 2:
        raise ConfigError(f"--policy {cfg.policy} composes at least 2 primitives; got --experts {cfg.n_experts}")
    if cfg.policy == "gaussian" and cfg.n_experts != 1:
        raise ConfigError(f"--policy gaussian has one expert; got --experts {cfg.n_experts} (use --policy pmoe)")
    if cfg.net.log_std_min >= cfg.net.log_std_max:
        raise ConfigError("net.log_std_min must be smaller than net.log_std_max")
    if cfg.algo != "ppo" and cfg.num_envs != 1:
        name = "SAC" if cfg.algo == "sac" else f"--algo {cfg.algo}"
        raise ConfigError(f"{name} collects with one environment; --num-envs {cfg.num_envs} is for --algo ppo")
    if cfg.algo == "ppo" and cfg.ppo.batch_size > cfg.ppo.n_steps * cfg.num_envs:
        raise ConfigError(
            f"ppo.batch_size {cfg.ppo.batch_size} is larger than a rollout of ppo.n_steps x num_envs = "
            f"{cfg.ppo.n_steps * cfg.num_envs} transitions"
        )
    if cfg.algo == "sac" and cfg.sac.actor_update == "sso" and cfg.compile != "off":
        raise ConfigError("sac.actor_update=sso runs eagerly; use it without --compile")
    parse_device(cfg.device)
    cfg.experts = cfg.n_experts
    return cfg
