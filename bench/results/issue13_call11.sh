#!/usr/bin/env bash
# Issues 13 and 15, call 11 (one H100, fresh): --time_budget 2 / 5 / 10 min; a class-conditional
# run and its guidance sweep; the 10-min run with DDPM-1000; the compile-cache dtype check.
# Runs in the background (setsid); results land in /tmp/w/out, copied to $OUT by polling calls.
set -u
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=60
G=$PWD/.gpu
rm -rf /tmp/w/code; cp -r $G/code /tmp/w/code; cd /tmp/w/code  # a later call replaces .gpu
export PYTHONPATH=/tmp/site:$PWD
W=/tmp/w; R=$W/out; mkdir -p $R
nvidia-smi -L; cat COMMIT
t0=$(date +%s)
python3 -m ddpm_lib.data --out $W/mnist_rgb --source local --local $G > $W/data.log 2>&1 || { cat $W/data.log; exit 1; }
echo "data built in $(( $(date +%s) - t0 )) s"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
npz() { python3 -c "
import numpy as np; from pathlib import Path; from PIL import Image
f = sorted(Path('$1').glob('*.png'))
np.savez_compressed('$2', images=np.stack([np.array(Image.open(p).convert('RGB')) for p in f]).transpose(0, 3, 1, 2))"; }
train() {  # name args...
  local name=$1 s; shift
  s=$(date +%s%N)
  python3 -m ddpm_lib.train --data_path $W/mnist_rgb --recipe fast --checkpoint_dir $W/$name/ck --sample_dir $W/$name/s "$@" > $W/$name.log 2>&1
  echo "TRAIN $name: rc $? wall $(ms $s) ms"; tr '\r' '\n' < $W/$name.log | grep -h "compiled\|budget\|done:\|epoch.*/.*EMA" | tail -4
  cp $W/$name/ck/eval_log.csv $R/eval_log_$name.csv
}
gen() {  # name sampler-name args...: 10,000 PNGs, scored
  local name=$1 tag=$2 s; shift 2
  s=$(date +%s%N)
  python3 -m ddpm_lib.generate --checkpoint $W/$name/ck/best_model.pt --output_dir $W/$name/$tag --batch_size 10000 "$@" >> $W/$name.log 2>&1
  echo "GENERATE $name $tag: rc $? wall $(ms $s) ms"
  python3 -m ddpm_lib.evaluator $W/$name/$tag --train_dir $W/mnist_rgb --device cuda > $R/score_${name}_$tag.txt 2>&1
  grep "digit-FID\|largest\|memorised\|precision\|recall" $R/score_${name}_$tag.txt
  npz $W/$name/$tag $R/${name}__$tag.npz
}
SDE="--sampler dpm++sde --sampling_steps 50"
for m in 2 5 10; do train budget$m --epochs 400 --time_budget $m; gen budget$m sde50 $SDE; done
train cond --class_conditional --epochs 400 --time_budget 4
s=$(date +%s%N)
python3 bench/bench_guidance.py --checkpoint $W/cond/ck/best_model.pt --data_path $W/mnist_rgb --json $R/guidance.json > $W/guidance.log 2>&1
echo "GUIDANCE SWEEP: rc $? wall $(ms $s) ms"; cat $W/guidance.log | tr '\r' '\n' | grep -v "it/s" | tail -20
for w in 0 2 4; do python3 -m ddpm_lib.generate --checkpoint $W/cond/ck/best_model.pt --output_dir $W/grid_w$w --digit all --guidance $w --num_images 100 --batch_size 100 $SDE >> $W/cond.log 2>&1; done
tar czf $R/cond_grids.tgz -C $W grid_w0 grid_w2 grid_w4
gen budget10 ddpm1000
tar czf $R/logs.tgz -C $W $(cd $W && ls *.log)
echo "MAIN DONE"
for mode in plain fixed; do for p in fp16 bf16; do
  TORCHINDUCTOR_CACHE_DIR=/tmp/ic_$mode python3 $G/cachebug.py $p $mode 2>&1 | tail -1 | sed "s/^/CACHE CHECK: /"
done; done
echo ALL DONE
