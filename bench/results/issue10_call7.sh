#!/usr/bin/env bash
# Issue 10, session 3, call 7: patch-folded UNets against the clock (3.5-minute budget each).
set -u
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
cd .gpu/code
export PYTHONPATH=/tmp/site:$PWD
W=/tmp/w; mkdir -p $W
nvidia-smi -L; cat COMMIT
t0=$(date +%s); deadline=$(( t0 + ${BUDGET:-575} ))
python3 -m ddpm_lib.data --out $W/mnist_rgb --source local --local ../ > $W/data.log 2>&1 || { cat $W/data.log; exit 1; }
echo "data built in $(( $(date +%s) - t0 )) s"
left() { echo $(( deadline - $(date +%s) )); }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
npz() { python3 -c "
import numpy as np; from pathlib import Path; from PIL import Image
f = sorted(Path('$1').glob('*.png'))
np.savez_compressed('$2', images=np.stack([np.array(Image.open(p).convert('RGB')) for p in f]).transpose(0, 3, 1, 2))"; }
gen() {  # name ckdir outdir args...
  local name=$1 ck=$2 out=$3 s; shift 3
  s=$(date +%s%N)
  timeout $(( $(left) - 15 )) python3 -m ddpm_lib.generate --checkpoint $ck/best_model.pt --output_dir $out --batch_size 10000 "$@"
  echo "GENERATE $name wall $(ms $s) ms"
}
candidate() {  # gpu name train-args...
  local gpu=$1 name=$2; shift 2; local d=$W/$name s
  export CUDA_VISIBLE_DEVICES=$gpu
  {
    s=$(date +%s%N)
    timeout $(( $(left) - 150 )) python3 -m ddpm_lib.train --data_path $W/mnist_rgb --checkpoint_dir $d/ck --sample_dir $d/s "$@"
    echo "TRAIN wall $(ms $s) ms"
    gen ddpm1000_seed0 $d/ck $d/ddpm1000_seed0
    npz $d/ddpm1000_seed0 $OUT/${name}__ddpm1000_seed0.npz
    cp $d/ck/eval_log.csv $W/eval_log_$name.csv
  } > $W/$name.log 2>&1
}
B="--recipe fast --epochs 400 --eval_interval 10 --time_budget 3.5 --patch_size 2"
candidate 0 A_p2_b96_12_b512 $B --base_dim 96 --channel_mults 1 2 &
candidate 1 B_p2_b128_12_b512 $B --base_dim 128 --channel_mults 1 2 &
candidate 2 C_p2_b96_12_b1024 $B --base_dim 96 --channel_mults 1 2 --batch_size 1024 --lr 2e-3 --warmup_steps 200 &
candidate 3 D_p2_b128_11_b512 $B --base_dim 128 --channel_mults 1 1 &
wait
tar czf $OUT/logs.tgz -C $W $(cd $W && ls *.log *.csv)
grep -h "training on\|compiled\|budget\|done:\|TRAIN\|GENERATE\|wrote\|rror" $W/*.log
ls -la $OUT
