"""User mistakes get one line ``error: ...``, exit code 2, no traceback, and nothing is overwritten."""

import json
import os
import subprocess
import sys

import pytest
from conftest import SMALL

from pmoe_rl import evaluate, train
from pmoe_rl.errors import cli_main


def run(main, args, capsys):
    code = cli_main(main, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real (tiny) PMOE-SAC run on InvertedPendulum-v5 with one checkpoint."""
    run_dir = tmp_path_factory.mktemp("runs") / "ip"
    code = cli_main(
        train.main,
        ["--env", "InvertedPendulum-v5", "--steps", "300", "--eval-every", "0", "--run-dir", str(run_dir), *SMALL],
    )
    assert code == 0
    return run_dir


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--env", "HalfCheetah-v55"], ["unknown environment 'HalfCheetah-v55'", "HalfCheetah-v5"]),
        (
            ["--env", "Hopper-v5", "--algo", "dqn"],
            ["algo: should be 'sac', 'ppo', 'odice', 'iql', 'bc' or 'imitate' (got 'dqn')"],
        ),
        (
            ["--env", "Hopper-v5", "--policy", "gmm"],
            ["policy: should be 'pmoe', 'gaussian', 'moe' or 'mcp' (got 'gmm')"],
        ),
        (["--env", "Hopper-v5", "--experts", "0"], ["experts: should be greater than 0"]),
        (["--env", "Hopper-v5", "--policy", "gaussian", "--experts", "3"], ["one expert"]),
        (["--env", "Hopper-v5", "--steps", "0"], ["steps: should be greater than 0"]),
        (["--env", "Hopper-v5", "--steps", "ten"], ["steps: should be a valid integer", "'ten'"]),
        (["--env", "Hopper-v5", "--set", "sac.actor_lr=-0.001"], ["sac.actor_lr: should be greater than 0"]),
        (["--env", "Hopper-v5", "--set", "sac.gama=0.9"], ["unknown config key 'sac.gama'", "gamma"]),
        (["--env", "Hopper-v5", "--set", "sac.batch_size=big"], ["sac.batch_size: should be a valid integer"]),
        (["--env", "Hopper-v5", "--set", "sac.gate_loss=l1"], ["sac.gate_loss: should be 'mse' or 'ce' (got 'l1')"]),
        (["--env", "Hopper-v5", "--set", "novalue"], ["--set expects KEY=VALUE"]),
        (["--env", "Hopper-v5", "--config", "/nonexistent/cfg.yaml"], ["config file not found"]),
        (["--env", "Hopper-v5", "--device", "tpu"], ["unknown device 'tpu'"]),
        (["--env", "Hopper-v5", "--num-envs", "4"], ["SAC collects with one environment", "--algo ppo"]),
        (["--env", "Hopper-v5", "--algo", "ppo", "--num-envs", "0"], ["num_envs: should be greater than 0"]),
        (
            ["--env", "Hopper-v5", "--algo", "ppo", "--vec-env", "threads"],
            ["vec_env: should be 'sync' or 'async' (got 'threads')"],
        ),
        (
            ["--env", "Hopper-v5", "--algo", "ppo", "--set", "ppo.clip_range=-0.2"],
            ["ppo.clip_range: should be greater than 0"],
        ),
        (["--env", "CartPole-v1", "--run-dir", "{tmp}/cp"], ["Discrete action space"]),
        ([], ["no environment given"]),
    ],
)
def test_train_rejects_bad_input(args, fragments, capsys, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run(train.main, args, capsys)
    assert_user_error(code, err, *fragments)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_missing_cuda_device(capsys):
    import torch

    # a CPU-only build of torch is named; on a machine without CUDA any cuda device is missing; on one with CUDA, a
    # GPU index it lacks
    if not torch.backends.cuda.is_built():
        device, fragment = "cuda", "is a CPU-only build; install a CUDA build of torch"
    elif not torch.cuda.is_available():
        device, fragment = "cuda", "CUDA is not available"
    else:
        device, fragment = "cuda:99", "does not exist"
    code, _, err = run(train.main, ["--env", "Hopper-v5", "--device", device], capsys)
    assert_user_error(code, err, fragment)


def test_malformed_and_wrong_config_files(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sac: {batch_size: 256\n  gamma: [")
    assert_user_error(*run(train.main, ["--env", "Hopper-v5", "--config", bad], capsys)[::2], "not valid YAML")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    assert_user_error(*run(train.main, ["--env", "Hopper-v5", "--config", listy], capsys)[::2], "must hold a mapping")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sac:\n  n_critics: 3\n")
    assert_user_error(
        *run(train.main, ["--env", "Hopper-v5", "--config", unknown], capsys)[::2], "unknown config key 'sac.n_critics'"
    )


def test_existing_run_directory_is_never_overwritten(trained_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")}
    code, _, err = run(train.main, ["--env", "InvertedPendulum-v5", "--run-dir", trained_run], capsys)
    assert_user_error(code, err, "already exists", "--resume", "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")} == before
    # --overwrite refuses a directory that is not a run
    other = trained_run.parent / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    code, _, err = run(train.main, ["--env", "InvertedPendulum-v5", "--run-dir", other, "--overwrite"], capsys)
    assert_user_error(code, err, "not a pmoe-rl run directory")
    assert (other / "thesis.tex").read_text() == "precious"


def test_resume_refuses_changed_hyperparameters(trained_run, capsys):
    code, _, err = run(train.main, ["--resume", trained_run, "--seed", "5"], capsys)
    assert_user_error(code, err, "cannot change seed when resuming")
    code, _, err = run(train.main, ["--resume", trained_run.parent / "nope"], capsys)
    assert_user_error(code, err, "not a pmoe-rl run directory")
    early = trained_run.parent / "killed-before-first-checkpoint"
    early.mkdir()
    (early / "config.yaml").write_text((trained_run / "config.yaml").read_text())
    code, _, err = run(train.main, ["--resume", early], capsys)
    assert_user_error(code, err, "has no complete checkpoint yet", "--overwrite")


def test_evaluate_rejects_missing_truncated_and_corrupted_checkpoints(trained_run, tmp_path, capsys):
    import shutil

    code, _, err = run(evaluate.main, [tmp_path / "missing"], capsys)
    assert_user_error(code, err, "checkpoint not found")
    code, _, err = run(evaluate.main, [tmp_path], capsys)
    assert_user_error(code, err, "no checkpoint at")

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained_run / "checkpoints" / "step_000000300", ckpt)
    model = ckpt / "model.safetensors"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])  # truncated
    assert_user_error(*run(evaluate.main, [ckpt], capsys)[::2], "corrupted", "model.safetensors")
    model.write_bytes(data[:-8] + bytes(8))  # same size, modified bytes
    assert_user_error(*run(evaluate.main, [ckpt], capsys)[::2], "does not match its checksum")
    model.write_bytes(data)
    (ckpt / "meta.json").write_text("{ not json")
    assert_user_error(*run(evaluate.main, [ckpt], capsys)[::2], "meta.json is not valid JSON")
    (ckpt / "meta.json").unlink()
    assert_user_error(*run(evaluate.main, [ckpt], capsys)[::2], "no checkpoint at")


def test_evaluate_rejects_an_env_with_other_spaces(trained_run, capsys):
    code, _, err = run(evaluate.main, [trained_run, "--env", "Hopper-v5"], capsys)
    assert_user_error(code, err, "observation space does not match", "[4] vs [11]")
    code, _, err = run(evaluate.main, [trained_run, "--episodes", "0"], capsys)
    assert_user_error(code, err, "--episodes must be >= 1")


def test_real_entry_point_exit_code_and_single_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pmoe_rl.train", "--env", "Hoper-v5"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown environment 'Hoper-v5'; did you mean Hopper-v5")
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "pmoe_rl.evaluate", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: checkpoint not found")
    assert not list(tmp_path.iterdir())  # nothing was created


def test_help_lists_every_option_once_with_its_default_and_choices(capsys):
    """Every config field appears exactly once in --help (a flag for the top-level ones, a KEY for --set for the
    sections'), with its default and, for a choice, the allowed values — all generated from the config."""
    import typing

    from pydantic import BaseModel

    from pmoe_rl.config import Config

    with pytest.raises(SystemExit) as exc:
        train.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    # argparse wraps a flag's help, also after a hyphen ("max-\n autotune")
    lines = out.replace("-\n                        ", "-").replace("\n                        ", " ").splitlines()
    defaults = Config()
    checked = 0
    for name, field in Config.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            keys = [
                (f"{name}.{sub}:", f, getattr(getattr(defaults, name), sub)) for sub, f in section.model_fields.items()
            ]
        else:
            keys = [(f"--{name.replace('_', '-')} ", field, getattr(defaults, name))]
        for key, f, default in keys:
            hits = [line for line in lines if line.strip().startswith(key)]
            assert len(hits) == 1, (key, hits)
            if default not in (None, ""):
                assert f"default: {default}" in hits[0], hits[0]
            if typing.get_origin(f.annotation) is typing.Literal:
                assert f"choices: {', '.join(typing.get_args(f.annotation))}" in hits[0], hits[0]
            checked += 1
    assert checked > 60
    for text in [
        "5 with PPO",
        "--config",
        "--run-dir",
        "--resume",
        "--overwrite",
        "--set",
        "choices: pmoe, gumbel, score, mrp",
    ]:
        assert text in " ".join(out.split()), text
    json.dumps(out)  # printable


def test_video_without_a_renderer_is_a_clear_error(trained_run, tmp_path):
    env = {**os.environ, "MUJOCO_GL": "no-such-backend"}
    proc = subprocess.run(
        [sys.executable, "-m", "pmoe_rl.evaluate", str(trained_run), "--video", str(tmp_path / "v")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot render 'InvertedPendulum-v5' for --video")
    assert "libosmesa6" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()
