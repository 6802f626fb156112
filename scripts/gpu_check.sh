#!/usr/bin/env bash
# The check to run the day a GPU is lent (BENCHMARKS.md, "GPU: the numbers still missing"): SAC and PPO with
# --device cuda end to end (train, kill -9, resume, evaluate, --analyze, from_checkpoint), the meta-device and
# host-synchronisation tests, SAC with --compile reduce-overhead (CUDA graphs), then pmoe-rl vs SB3 throughput on
# the same GPU (eager, and SAC compiled). About 10 minutes on one GPU; every result goes to one report file.
#
#   bash scripts/gpu_check.sh [REPORT]        # default REPORT: gpu_check_report.txt
set -uo pipefail
cd "$(dirname "$0")/.."
report=${1:-gpu_check_report.txt}
work=$(mktemp -d)
export MUJOCO_GL=${MUJOCO_GL:-egl}
: >"$report"
log() { echo "$*" | tee -a "$report"; }
step() {  # step NAME COMMAND...: run it, keep its last lines, say ok/FAILED with the time it took
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$work/out.txt" 2>&1; then log "ok      $name ($((SECONDS - start)) s)"; else log "FAILED  $name ($((SECONDS - start)) s)"; fi
  tail -n 4 "$work/out.txt" | sed 's/^/        /' >>"$report"
}

log "gpu_check $(date -u +%FT%TZ) on $(hostname)"
log "$(python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU")')"
log "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"

common=(--steps 3000 --eval-every 1000 --eval-episodes 3 --checkpoint-every 1000 --log-every 1000 --no-progress --device cuda)
for algo in sac ppo; do
  extra=(); [ "$algo" = ppo ] && extra=(--algo ppo --set ppo.n_steps=512)
  run="$work/$algo"
  # train, killed after its first checkpoint, then resumed to the end
  python -m pmoe_rl.train --env Hopper-v5 "${extra[@]}" "${common[@]}" --run-dir "$run" >"$work/$algo.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do [ -f "$run/checkpoints/latest" ] && break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  step "$algo: killed after its first checkpoint, resumed on cuda" python -m pmoe_rl.train --resume "$run" --device cuda
  step "$algo: evaluate (CPU copy) matches the run's last eval/mean_reward" python - "$run" <<'EOF'
import csv, subprocess, sys, json
run = sys.argv[1]
last = [r for r in csv.DictReader(open(f"{run}/progress.csv")) if r["eval/mean_reward"]][-1]
subprocess.run([sys.executable, "-m", "pmoe_rl.evaluate", run, "--episodes", "3", "--device", "cuda", "--json",
                f"{run}/eval.json"], check=True)
got = json.load(open(f"{run}/eval.json"))["mean_return"]
print("training", last["eval/mean_reward"], "evaluate", got)
assert abs(got - float(last["eval/mean_reward"])) < 1e-6
EOF
  step "$algo: evaluate --device cuda --analyze" python -m pmoe_rl.evaluate "$run" --episodes 2 --device cuda --analyze "$work/$algo-analysis"
  step "$algo: from_checkpoint on cuda, predict" python -c "
from pmoe_rl.sb3 import from_checkpoint
m = from_checkpoint('$run', device='cuda'); import numpy as np
o = np.stack([m.observation_space.sample() for _ in range(8)])
a = m.predict(o, deterministic=True)[0]; assert (a == m.predict(o, deterministic=True)[0]).all(); print(a.shape)"
done

step "meta-device and host-synchronisation tests" python -m pytest -q tests/test_devices.py
step "SAC throughput on cuda vs SB3" python scripts/bench_throughput.py --algo sac --env HalfCheetah-v5 --steps 1500 --rounds 2 --device cuda
cat "$work/out.txt" >>"$report"
step "SAC --compile reduce-overhead (CUDA graphs) trains end to end on cuda" python -m pmoe_rl.train --env Hopper-v5 \
  --steps 2000 --eval-every 1000 --eval-episodes 2 --no-progress --device cuda --compile reduce-overhead --run-dir "$work/compiled"
step "SAC throughput on cuda vs SB3, pmoe-rl compiled (reduce-overhead)" python scripts/bench_throughput.py --algo sac --env HalfCheetah-v5 --steps 1500 --rounds 1 --device cuda --compile reduce-overhead
cat "$work/out.txt" >>"$report"
step "PPO throughput on cuda vs SB3 (auto picks the CPU for PPO; this measures why)" python scripts/bench_throughput.py --algo ppo --env HalfCheetah-v5 --rounds 2 --device cuda
cat "$work/out.txt" >>"$report"
log "report: $report"
