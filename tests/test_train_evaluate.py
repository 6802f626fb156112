"""End to end on real MuJoCo tasks: the files a run writes are readable by their real consumers, checkpoints
round-trip, evaluation reproduces training's own evaluation, truncation keeps bootstrapping, videos record."""

import csv
import json

import pytest
import torch
import yaml
from conftest import SMALL
from safetensors import safe_open

from pmoe_rl import checkpoint, evaluate, load_policy, train
from pmoe_rl.agents.sac import SAC
from pmoe_rl.config import Config, from_dict
from pmoe_rl.errors import cli_main

SB3_KEYS = [
    "rollout/ep_rew_mean",
    "rollout/ep_len_mean",
    "time/fps",
    "time/total_timesteps",
    "train/actor_loss",
    "train/critic_loss",
    "train/ent_coef",
    "eval/mean_reward",
    "eval/mean_ep_length",
]
MIXTURE_KEYS = [
    "train/gate_entropy",
    "train/gate_loss",
    "rollout/expert_usage_0",
    "train/best_expert_freq_3",
    "eval/expert_usage_0",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    code = cli_main(
        train.main,
        [
            "--env",
            "InvertedPendulum-v5",
            "--steps",
            "600",
            "--eval-every",
            "300",
            "--eval-episodes",
            "3",
            "--checkpoint-every",
            "300",
            "--log-every",
            "200",
            "--run-dir",
            str(run_dir),
            *SMALL,
        ],
    )
    assert code == 0
    return run_dir


def test_run_directory_layout_and_config(run_dir):
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert cfg.env == "InvertedPendulum-v5" and cfg.n_experts == 4 and cfg.net.hidden == [32, 32]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000000600"
    assert (run_dir / "checkpoints" / "step_000000300" / "model.safetensors").is_file()
    # only the newest checkpoint keeps the (large) training state
    assert not (run_dir / "checkpoints" / "step_000000300" / "state.safetensors").exists()
    assert (run_dir / "checkpoints" / "step_000000600" / "state.safetensors").is_file()


def test_csv_and_json_logs_use_sb3_key_names(run_dir):
    with open(run_dir / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    header = rows[0].keys()
    for key in SB3_KEYS + MIXTURE_KEYS:
        assert key in header, key
    steps = [int(r["time/total_timesteps"]) for r in rows]
    assert steps == [200, 300, 400, 600]
    evals = [float(r["eval/mean_reward"]) for r in rows if r["eval/mean_reward"]]
    assert len(evals) == 2
    lines = [json.loads(line) for line in (run_dir / "progress.json").read_text().splitlines()]
    assert [line["time/total_timesteps"] for line in lines] == steps


def test_tensorboard_reader_sees_the_scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for key in ["rollout/ep_rew_mean", "train/critic_loss", "eval/mean_reward", "train/gate_entropy"]:
        assert key in tags, key
    assert [e.step for e in acc.Scalars("eval/mean_reward")] == [300, 600]


def test_checkpoint_opens_with_safetensors_and_describes_itself(run_dir):
    ckpt = run_dir / "checkpoints" / "step_000000600"
    with safe_open(str(ckpt / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("policy.mean_head.weight").shape == (4 * 1, 32)
    assert {"log_alpha", "policy.gate.weight", "critic.net.weights.0", "critic_target.net.weights.0"} <= keys
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["step"] == 600 and meta["env_id"] == "InvertedPendulum-v5" and meta["algo"] == "sac"
    assert meta["observation_space"]["shape"] == [4] and meta["action_space"]["shape"] == [1]
    assert meta["action_space"]["low"] == [-3.0] and meta["observation_space"]["low"][0] == "-inf"
    assert {"torch", "gymnasium", "mujoco", "numpy", "python"} <= meta["versions"].keys()


def test_evaluate_reproduces_the_training_runs_last_evaluation(run_dir, tmp_path, capsys):
    with open(run_dir / "progress.csv") as f:
        last = [r for r in csv.DictReader(f) if r["eval/mean_reward"]][-1]
    out_json = tmp_path / "eval.json"
    assert cli_main(evaluate.main, [str(run_dir), "--episodes", "3", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert set(result) == {"mean_return", "std_return", "returns", "lengths", "expert_usage"}
    assert result["mean_return"] == pytest.approx(float(last["eval/mean_reward"]), abs=1e-6)
    assert len(result["returns"]) == 3 and sum(result["expert_usage"]) == pytest.approx(1.0)
    out = capsys.readouterr().out
    assert "return:" in out and "expert usage:" in out


def test_checkpoint_round_trip_gives_identical_deterministic_actions(tmp_path):
    from pmoe_rl.envs import make_env

    cfg = Config(env="Hopper-v5", experts=3)
    env = make_env(cfg.env)
    agent = SAC(cfg, 11, 3, torch.device("cpu"))
    with torch.no_grad():  # move away from the near-zero initial heads
        for p in agent.policy.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    meta = {
        "algo": "sac",
        "env_id": cfg.env,
        "config": cfg.model_dump(),
        "observation_space": checkpoint.describe_box(env.observation_space),
        "action_space": checkpoint.describe_box(env.unwrapped.action_space),
    }
    checkpoint.save(tmp_path, 7, agent.weights(), meta, state={"optim": agent.optim_state()})
    policy, ckpt = load_policy(tmp_path)
    obs = torch.randn(50, 11)
    for seed in range(3):
        a1, k1 = agent.policy.act(obs, deterministic=True, generator=torch.Generator().manual_seed(seed))
        a2, k2 = policy.act(obs, deterministic=True, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a1, a2) and torch.equal(k1, k2)
    full = checkpoint.load(tmp_path, with_state=True)
    other = SAC(cfg, 11, 3, torch.device("cpu"))
    other.load_weights(full.weights)
    other.load_optim_state(full.state["optim"])
    for name, value in agent.weights().items():
        assert torch.equal(value, other.weights()[name]), name
    env.close()


def test_state_flattening_round_trips_optimizer_state():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    skeleton = checkpoint.flatten(opt.state_dict(), "opt", tensors)
    json.dumps(skeleton)
    restored = checkpoint.unflatten(json.loads(json.dumps(skeleton)), tensors)
    groups = opt.state_dict()["param_groups"]
    as_json = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in groups]
    assert restored["param_groups"] == as_json
    for key, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][key][name], value)
    fresh = torch.optim.Adam(net.parameters(), lr=1e-3)
    fresh.load_state_dict(restored)  # tuples came back as lists; Adam accepts them
    fresh.step()


@pytest.mark.parametrize(
    "env_id, ends_by, warmup",
    [("Pendulum-v1", "truncation", "uniform"), ("InvertedPendulum-v5", "termination", "policy")],
)
def test_only_terminations_stop_bootstrapping(env_id, ends_by, warmup, tmp_path):
    """Pendulum-v1 episodes end by the 200-step time limit: stored as not terminated (bootstrap from s');
    InvertedPendulum-v5 episodes end when the pole falls: stored as terminated."""
    run_dir = tmp_path / "run"
    assert (
        cli_main(
            train.main,
            [
                "--env",
                env_id,
                "--steps",
                "450",
                "--eval-every",
                "0",
                "--run-dir",
                str(run_dir),
                *SMALL,
                "--set",
                "sac.learning_starts=1000",
                "--set",
                f"sac.warmup={warmup}",
            ],
        )
        == 0
    )
    ckpt = checkpoint.load(run_dir, with_state=True)
    storage = ckpt.state["buffer"]["storage"]
    terminated = storage[:, -1]
    assert storage.shape[0] == 450
    if ends_by == "truncation":
        assert terminated.sum() == 0 and ckpt.state["episodes"] == 2
    else:
        assert terminated.sum() == ckpt.state["episodes"] > 5


def test_video_recording(run_dir, tmp_path, capsys):
    videos = tmp_path / "videos"
    assert cli_main(evaluate.main, [str(run_dir), "--episodes", "2", "--video", str(videos)]) == 0
    files = sorted(videos.glob("*.mp4"))
    assert len(files) == 2 and all(f.stat().st_size > 1000 for f in files)
    before = {f: f.stat().st_mtime_ns for f in files}
    assert cli_main(evaluate.main, [str(run_dir), "--episodes", "1", "--video", str(videos)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert {f: f.stat().st_mtime_ns for f in videos.glob("*.mp4")} == before  # the first videos are untouched
