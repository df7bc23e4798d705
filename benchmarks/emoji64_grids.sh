#!/usr/bin/env bash
# Sample grids of an emoji64 run: prompts of test emoji (never trained on) and prompts in words the
# captions never use. Usage: benchmarks/emoji64_grids.sh RUN_DIR OUT_DIR [num_per_prompt]
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?run folder}
out=${2:?output folder}
n=${3:-6}
python=${PYTHON:-python}
"$python" generate.py "ckpt_path=$run/checkpoints/last.ckpt" num_per_prompt="$n" seed=0 "out_dir=$out/test_emoji" \
    'prompts=["sleepy face","face screaming in fear","brown heart","thumbs up","brain","horse face","camel","speech balloon"]'
"$python" generate.py "ckpt_path=$run/checkpoints/last.ckpt" num_per_prompt="$n" seed=0 "out_dir=$out/new_words" \
    'prompts=["a happy yellow face","a small blue bird","a pink flower","a green tree","a sad face with tears","an orange fruit","a yellow star","a red car"]'
