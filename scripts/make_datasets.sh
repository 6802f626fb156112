#!/usr/bin/env bash
# The D4RL-style datasets of Hopper-v5, HalfCheetah-v5 and Walker2d-v5, made locally (docs/offline.md):
# for each task a PPO expert trained with every transition recorded, then python -m pmoe_rl.collect writes
# pmoe_rl/<env>/{random,medium,medium-replay,expert,medium-expert}-v0 under $MINARI_DATASETS_PATH.
#
#   bash scripts/make_datasets.sh [STEPS_PER_DATASET] [TRAINING_STEPS]     # defaults: 1000000 1000000
#
# The three tasks train side by side, one thread each (on a 2-core machine about an hour of PPO each, then the
# collection). Runs go to runs/datasets/<env>; an existing run is resumed, an existing dataset is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-1000000}
train_steps=${2:-1000000}
export MINARI_DATASETS_PATH=${MINARI_DATASETS_PATH:-$HOME/.minari/datasets}
make_one() {
  local env=$1 run=runs/datasets/$1
  if [ -f "$run/config.yaml" ]; then
    python -m pmoe_rl.train --resume "$run" --steps "$train_steps" --no-progress --threads 1
  else
    python -m pmoe_rl.train --env "$env" --algo ppo --policy gaussian --steps "$train_steps" --record-transitions \
      --checkpoint-every 50000 --eval-every 50000 --eval-episodes 5 --log-every 50000 --threads 1 --no-progress \
      --run-dir "$run"
  fi
  python -m pmoe_rl.collect "$run" --steps "$steps" --threads 1 --no-progress
}
mkdir -p runs/datasets
pids=()
for env in Hopper-v5 HalfCheetah-v5 Walker2d-v5; do
  make_one "$env" >"runs/datasets/$env.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for env in Hopper-v5 HalfCheetah-v5 Walker2d-v5; do tail -n 6 "runs/datasets/$env.log"; done
exit $status
