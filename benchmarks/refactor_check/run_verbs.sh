#!/usr/bin/env bash
# Every training verb, tiny, with the code at $1 (a checkout's root) into $2; prints nothing but errors.
set -euo pipefail
SRC=$1; OUT=$2
export PYTHONPATH=$SRC/src OMP_NUM_THREADS=1
S="python -m semmae.cli"
mkdir -p $OUT
cd $OUT
[ -d data ] || $S data synth --out data --num-images 64 --size 32 >/dev/null
[ -d pre ] || $S pretrain --config pretrain/tiny_cpu --data data/train --out pre --img-size 32 --depth 1 --decoder-depth 1 --batch-size 8 --epochs 2 --warmup-epochs 1 --num-workers 0 --masking random --log-every 1 --no-progress --seed 3 >/dev/null
[ -d boot ] || $S bootstrap --config bootstrap/tiny_cpu --data data/train --out boot --img-size 32 --local-size 16 --local-crops 2 --depth 1 --out-dim 64 --head-hidden-dim 32 --head-bottleneck-dim 16 --batch-size 8 --epochs 2 --warmup-epochs 1 --num-workers 0 --log-every 1 --no-progress --seed 3 >/dev/null
$S parts train --config parts/tiny_cpu --data data/train --out parts --encoder-checkpoint pre --img-size 32 --epochs 2 --batch-size 16 --num-workers 0 --log-every 1 --seed 3 >/dev/null
$S finetune --config eval/finetune_cpu_tiny --checkpoint pre --train data/train --val data/val --out ft --epochs 2 --batch-size 8 --num-workers 0 --seed 3 >/dev/null
$S linprobe --mode full --checkpoint pre --train data/train --val data/val --out lp --epochs 2 --warmup-epochs 1 --batch-size 8 --num-workers 0 --seed 3 >/dev/null
$S segment train --config segment/tiny_synth --checkpoint pre --data data --layout synth --out seg --crop-size 32 --scale-base 32 --max-long 64 --eval-stride 16 --iters 6 --batch-size 4 --ckpt-every 3 --log-every 1 --seed 3 >/dev/null
echo done
