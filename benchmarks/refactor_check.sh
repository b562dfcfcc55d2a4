#!/bin/bash
# Run every training stage at a fixed seed with the code in SRC (a checkout's src/ folder) into OUT; run it for the
# code before and after a refactor, then `python benchmarks/compare_runs.py OUT_BEFORE OUT_AFTER` (issue 16).
# About 10 minutes on 2 idle CPU cores. Usage: benchmarks/refactor_check.sh SRC OUT
set -euo pipefail
SRC=$(realpath "$1"); OUT=$2; mkdir -p "$OUT"; cd "$OUT"
export PYTHONPATH=$SRC OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
semmae() { python -m semmae.cli "$@"; }
semmae demo --budget small --out demo --num-workers 0 --no-progress > demo.log 2>&1
D=demo/data
CK=$(ls demo/pretrain/mae-seed0/checkpoints/ckpt-*.pth | tail -n 1)
semmae bootstrap --config bootstrap/tiny_cpu --data $D/train --out boot --epochs 2 --max-steps 6 --log-every 1 \
  --num-workers 0 --no-progress --model vit_micro_patch8 --img-size 32 --local-size 16 --batch-size 16 \
  --out-dim 64 --head-hidden-dim 32 --head-bottleneck-dim 16 > boot.log 2>&1
# (RandAugment off: the code before issue 16 crashed in it under Pillow 13, see data/randaugment.py)
semmae finetune --config eval/finetune_cpu_tiny --data $D --checkpoint "$CK" --out ft --epochs 1 --num-workers 0 \
  --auto-augment "" > ft.log 2>&1
semmae segment train --config segment/tiny_synth --data $D --checkpoint "$CK" --out seg --iters 20 --log-every 5 \
  --ckpt-every 10 > seg.log 2>&1
semmae linprobe --config eval/linprobe_cpu_tiny --data $D --checkpoint "$CK" --out lpfull --mode full --epochs 2 \
  --warmup-epochs 1 --num-workers 0 > lp.log 2>&1
echo "done: $OUT"
