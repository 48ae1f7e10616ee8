#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, all GPUs of a node in it.
# Inside an allocation (sbatch/salloc) it runs `srun`; the coordinator is the first host
# of SLURM_JOB_NODELIST, process count and index come from SLURM_NTASKS / SLURM_PROCID.
# --dry-run prints the srun command (and works outside SLURM with --nodes).
#
#   sbatch --nodes 4 --gpus-per-node 8 --ntasks-per-node 1 launch/gpu_slurm.sh \
#     --config configs/gemma2_9b_liquid.py --workdir /shared/runs/gemma2_9b [-- --config.train.steps=1000]
#   launch/gpu_slurm.sh --dry-run --nodes 2 --config configs/tiny_liquid.py --workdir /tmp/run
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

CONFIG="" WORKDIR="" NODES="${SLURM_JOB_NUM_NODES:-}" GPUS_PER_NODE="${SLURM_GPUS_ON_NODE:-8}"
PORT="${LIQUID_JAX_COORDINATOR_PORT:-12355}" DRY_RUN=0
TRAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --nodes) NODES="$2"; shift 2 ;;
    --gpus-per-node) GPUS_PER_NODE="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n "$CONFIG" && -n "$WORKDIR" ]] || { echo "--config and --workdir are required" >&2; usage; }
[[ -n "$NODES" ]] || { echo "not inside a SLURM allocation: pass --nodes (or submit with sbatch)" >&2; exit 2; }

if [[ -n "${SLURM_JOB_NODELIST:-}" ]]; then
  COORDINATOR_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
else
  COORDINATOR_HOST='$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
fi

# Expanded per task by the inner shell, so each process gets its own SLURM_PROCID.
inner="liquid-jax train --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")"
inner+=" --distributed=on --coordinator_address=$COORDINATOR_HOST:$PORT"
inner+=' --num_processes=$SLURM_NTASKS --process_id=$SLURM_PROCID'
for arg in "${TRAIN_ARGS[@]}"; do inner+=" $(printf '%q' "$arg")"; done

cmd=(srun --nodes "$NODES" --ntasks-per-node 1 --gpus-per-node "$GPUS_PER_NODE"
     --kill-on-bad-exit=1 --label bash -c "$inner")
if [[ $DRY_RUN == 1 ]]; then
  printf '%q ' "${cmd[@]}"; echo
else
  # SIGTERM from SLURM (time limit, preemption) reaches every task; the trainer saves.
  exec "${cmd[@]}"
fi
