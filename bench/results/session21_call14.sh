#!/usr/bin/env bash
# Session 21, call 14 (one GPU): the device check on CUDA; the fast recipe class-conditional,
# then bench_guidance's sweep (10,000 balanced samples per w) and 10x10 grids for w = 0, 2, 4.
set -u
T0=$(date +%s)
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=60
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
G=$PWD/.gpu W=/tmp/w R=$OUT; mkdir -p $W
nvidia-smi -L
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
s=$(date +%s%N)
python3 -m ddpm_lib.data --out $W/mnist_rgb --source local --local $G > $W/data.log 2>&1 || { cat $W/data.log; exit 1; }
echo "data built in $(ms $s) ms"
echo "# --device cuda:7"; python3 -m ddpm_lib.train --data_path $W/mnist_rgb --device cuda:7 --checkpoint_dir $W/c7 2>&1 | tail -1
echo "# torchrun, 2 processes, auto, one GPU"
torchrun --standalone --nproc_per_node=2 -m ddpm_lib.train --data_path $W/mnist_rgb --checkpoint_dir $W/t2 --sample_dir $W/t2s 2>&1 | grep -i "error" | head -3
s=$(date +%s%N)
python3 -m ddpm_lib.train --data_path $W/mnist_rgb --recipe fast --class_conditional \
  --checkpoint_dir $W/cond/ck --sample_dir $W/cond/s > $W/cond.log 2>&1
echo "TRAIN cond: rc $? wall $(ms $s) ms"
tr '\r' '\n' < $W/cond.log | grep -v "it/s\|s/it" | grep -v "^ *$" | tail -5
cp $W/cond/ck/eval_log.csv $R/eval_log_cond.csv
for w in 0 2 4; do python3 -m ddpm_lib.generate --checkpoint $W/cond/ck/best_model.pt --output_dir $W/grid_w$w \
  --digit all --guidance $w --num_images 100 --batch_size 100 --sampler dpm++sde --sampling_steps 50 > $W/grid_w$w.log 2>&1; echo "grid w=$w rc $?"; done
python3 -c "
from PIL import Image; from pathlib import Path
g=Image.new('RGB',(3*10*28+2*28,10*28))
for k,w in enumerate((0,2,4)):
    for i,p in enumerate(sorted(Path('$W/grid_w%d'%w).glob('*.png'))): g.paste(Image.open(p),(k*11*28+(i%10)*28,(i//10)*28))
g.resize((2*g.width,2*g.height),Image.NEAREST).save('$R/cond_grids_w0_2_4.png')"
left=$(( 575 - ($(date +%s) - T0) )); echo "sweep gets $left s"
s=$(date +%s%N)
timeout $left python3 bench/bench_guidance.py --checkpoint $W/cond/ck/best_model.pt --data_path $W/mnist_rgb \
  --batch_size 10000 --json $R/guidance.json > $W/guidance.log 2>&1
echo "GUIDANCE SWEEP: rc $? wall $(ms $s) ms"; tr '\r' '\n' < $W/guidance.log | grep -v "it/s\|s/it" | grep -v "^ *$" | tail -16
cp $W/guidance.log $R/guidance.log
tar czf $R/logs.tgz -C $W $(cd $W && ls *.log)
echo ALL DONE
