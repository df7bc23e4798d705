#!/usr/bin/env bash
# emoji64 at an equal wall-clock budget: GAN-GA, DF-GAN's fusion (fusion=affine), DCGAN and the
# VAE-GAN, two seeds each. Two runs at a time side by side, one thread each, so both arms of a pair
# share the machine alike; each trains `experiment=emoji64` for MINUTES, then its last.ckpt is scored
# on the 653 test drawings. Writes benchmarks/results/emoji64_<MINUTES>_<arm>_seed<S>.json and keeps
# the run folders under RUNS (sample grids: benchmarks/emoji64_grids.sh).
#
# Usage: benchmarks/emoji64_compare.sh MINUTES [DATA_ROOT] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?minutes per run}
root=${2:-data/emoji64}
runs=${3:-logs/emoji64_compare}
python=${PYTHON:-python}
budget=$(printf "00:00:%02d:00" "$minutes")

one() {  # arm seed overrides...
    local arm=$1 seed=$2
    shift 2
    OMP_NUM_THREADS=1 "$python" benchmarks/shapes_quality.py --final-eval 653 \
        --run-dir "$runs/${arm}_seed${seed}" --out "benchmarks/results/emoji64_${minutes}_${arm}_seed${seed}.json" \
        experiment=emoji64 "data.root=$root" "seed=$seed" "trainer.max_time=$budget" data.num_workers=1 "$@" \
        > "$runs/${arm}_seed${seed}.log" 2>&1
}

mkdir -p "$runs"
for seed in 0 1; do
    one gan_ga "$seed" & one affine "$seed" fusion=affine & wait
done
for seed in 0 1; do
    one dcgan "$seed" model=dcgan & one vaegan "$seed" model=vaegan & wait
done
