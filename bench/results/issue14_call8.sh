#!/usr/bin/env bash
# Issue 14, call 8: one GPU against two on one host, the real training loop; quality of the 2-GPU run.
set -u
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
cd .gpu/code
export PYTHONPATH=/tmp/site:$PWD
W=/tmp/w; mkdir -p $W
nvidia-smi -L; nvidia-smi topo -m | head -4; cat COMMIT
t0=$(date +%s)
python3 -m ddpm_lib.data --out $W/mnist_rgb --source local --local ../ > $W/data.log 2>&1 || { cat $W/data.log; exit 1; }
echo "data built in $(( $(date +%s) - t0 )) s"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
T="python3 -m ddpm_lib.train --data_path $W/mnist_rgb --recipe fast"
S="--epochs 6 --eval_interval 6 --save_interval 100"
L="--batch_size 1024 --lr 2e-3 --warmup_steps 200"
run() {  # name gpus nproc args...
  local name=$1 gpus=$2 n=$3 s; shift 3
  s=$(date +%s%N)
  CUDA_VISIBLE_DEVICES=$gpus torchrun --standalone --nproc_per_node=$n -m ddpm_lib.train --data_path $W/mnist_rgb --recipe fast \
     --checkpoint_dir $W/$name/ck --sample_dir $W/$name/s "$@" > $W/$name.log 2>&1
  echo "$name: rc $? wall $(ms $s) ms: $(grep -h 'done:' $W/$name.log)"
}
run n1_b512 0 1 $S & run n1_b1024 1 1 $S $L & wait
run n2_b1024 0,1 2 $S $L
run n2_b512_full 0,1 2
grep -h "compiled\|identical\|epoch 40.00" $W/n2_b512_full.log
s=$(date +%s%N)
python3 -m ddpm_lib.generate --checkpoint $W/n2_b512_full/ck/best_model.pt --output_dir $W/gen --batch_size 10000 > $W/gen.log 2>&1
echo "GENERATE wall $(ms $s) ms: $(tail -1 $W/gen.log)"
python3 -c "
import numpy as np; from pathlib import Path; from PIL import Image
f = sorted(Path('$W/gen').glob('*.png'))
np.savez_compressed('$OUT/n2_b512_full__ddpm1000_seed0.npz', images=np.stack([np.array(Image.open(p).convert('RGB')) for p in f]).transpose(0, 3, 1, 2))"
cp $W/n2_b512_full/ck/eval_log.csv $W/eval_log_n2_b512_full.csv
tar czf $OUT/logs.tgz -C $W $(cd $W && ls *.log *.csv)
ls -la $OUT
