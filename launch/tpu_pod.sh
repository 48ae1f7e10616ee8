#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: create the TPU VM (directly or as a queued resource),
# install liquid_jax on every worker, run the same `liquid-jax train` on all workers and
# stream their logs. --dry-run prints the gcloud commands instead of running them.
#
#   launch/tpu_pod.sh --name liquid-7b --zone us-east5-a --accelerator v5p-128 \
#     --config configs/gemma_7b_liquid.py --bucket gs://my-bucket [--queued] [--spot] \
#     [--project my-project] [--repo GIT_URL] [--dry-run] [-- --config.train.steps=1000 ...]
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

NAME="" ZONE="" ACCELERATOR="" CONFIG="" BUCKET="" PROJECT="" RUN_NAME=""
VERSION="" QUEUED=0 SPOT=0 DRY_RUN=0 SKIP_CREATE=0
REPO=""  # git URL to clone on the workers; default: copy this checkout (git archive HEAD)
TRAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --accelerator) ACCELERATOR="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --bucket) BUCKET="${2%/}"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --run-name) RUN_NAME="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --spot) SPOT=1; shift ;;
    --skip-create) SKIP_CREATE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
for required in NAME ZONE ACCELERATOR CONFIG BUCKET; do
  [[ -n "${!required}" ]] || { echo "missing --${required,,}" >&2; usage; }
done
[[ "$BUCKET" == gs://* ]] || { echo "--bucket must be a gs:// URL, got $BUCKET" >&2; exit 2; }
RUN_NAME="${RUN_NAME:-$(basename "$CONFIG" .py)}"
if [[ -z "$VERSION" ]]; then
  case "$ACCELERATOR" in
    v5p-*) VERSION="v2-alpha-tpuv5" ;;
    v5litepod-*|v5e-*) VERSION="v2-alpha-tpuv5-lite" ;;
    v6e-*) VERSION="v2-alpha-tpuv6e" ;;
    *) VERSION="tpu-ubuntu2204-base" ;;
  esac
fi
GCLOUD=(gcloud)
[[ -n "$PROJECT" ]] && GCLOUD+=(--project "$PROJECT")

run() {
  if [[ $DRY_RUN == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [[ $SKIP_CREATE == 0 ]]; then
  if [[ $QUEUED == 1 ]]; then
    create=("${GCLOUD[@]}" compute tpus queued-resources create "$NAME-qr" --node-id "$NAME"
            --zone "$ZONE" --accelerator-type "$ACCELERATOR" --runtime-version "$VERSION")
    [[ $SPOT == 1 ]] && create+=(--spot)
    run "${create[@]}"
    if [[ $DRY_RUN == 0 ]]; then
      until [[ "$("${GCLOUD[@]}" compute tpus queued-resources describe "$NAME-qr" --zone "$ZONE" \
                 --format='value(state.state)')" == ACTIVE ]]; do
        echo "waiting for queued resource $NAME-qr ..."; sleep 60
      done
    else
      echo "# (wait until: ${GCLOUD[*]} compute tpus queued-resources describe $NAME-qr --zone $ZONE --format='value(state.state)' prints ACTIVE)"
    fi
  else
    create=("${GCLOUD[@]}" compute tpus tpu-vm create "$NAME" --zone "$ZONE"
            --accelerator-type "$ACCELERATOR" --version "$VERSION")
    [[ $SPOT == 1 ]] && create+=(--spot)
    run "${create[@]}"
  fi
fi

ssh_all() {
  run "${GCLOUD[@]}" compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1"
}

install="python3 -m pip install -U pip && python3 -m pip install -e 'liquid_jax[tpu]'"
if [[ -n "$REPO" ]]; then
  ssh_all "set -e; if [ -d liquid_jax ]; then git -C liquid_jax pull --ff-only; else git clone $REPO liquid_jax; fi; $install"
else
  archive="${TMPDIR:-/tmp}/liquid_jax-$NAME.tar.gz"
  run git -C "$(dirname "$0")/.." archive --format=tar.gz --prefix=liquid_jax/ -o "$archive" HEAD
  run "${GCLOUD[@]}" compute tpus tpu-vm scp "$archive" "$NAME:liquid_jax.tar.gz" --zone "$ZONE" --worker=all
  ssh_all "set -e; rm -rf liquid_jax; tar xzf liquid_jax.tar.gz; $install"
fi

# Every worker runs the same command; jax.distributed finds its peers from the TPU metadata.
train_cmd="cd liquid_jax && liquid-jax train --config $CONFIG --workdir $BUCKET/$RUN_NAME --distributed=on"
for arg in "${TRAIN_ARGS[@]}"; do train_cmd+=" $(printf '%q' "$arg")"; done
# Output of every worker is streamed back by `ssh --worker=all`; a copy stays on each VM.
ssh_all "$train_cmd 2>&1 | tee -a \$HOME/liquid_jax_train.log"
