#!/usr/bin/env bash
# Session 21, call 13 (one GPU, fresh): main on a GPU after the issue-12 fixes.
# 1. --recipe fast --time_budget 5 with the corrected stopwatch (fresh compile), 10k dpm++sde-50, scored
# 2. issue 12 on CUDA: divergence with compile + CUDA graphs, a missing cuda:7, a mixed set refused
set -u
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=60
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
G=$PWD/.gpu W=/tmp/w R=$OUT; mkdir -p $W
nvidia-smi -L; git log --oneline -1 2>/dev/null || true
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
s=$(date +%s%N)
python3 -m ddpm_lib.data --out $W/mnist_rgb --source local --local $G > $W/data.log 2>&1 || { cat $W/data.log; exit 1; }
echo "data built in $(ms $s) ms"
s=$(date +%s%N)
python3 -m ddpm_lib.train --data_path $W/mnist_rgb --recipe fast --epochs 400 --time_budget 5 \
  --checkpoint_dir $W/b5/ck --sample_dir $W/b5/s > $W/b5.log 2>&1
echo "TRAIN budget5: rc $? wall $(ms $s) ms"
tr '\r' '\n' < $W/b5.log | grep -v "it/s\|s/it" | tail -8
cp $W/b5/ck/eval_log.csv $R/eval_log_b5.csv
s=$(date +%s%N)
python3 -m ddpm_lib.generate --checkpoint $W/b5/ck/best_model.pt --output_dir $W/b5/sde50 --batch_size 10000 \
  --sampler dpm++sde --sampling_steps 50 > $W/gen.log 2>&1
echo "GENERATE sde50: rc $? wall $(ms $s) ms"; tr '\r' '\n' < $W/gen.log | grep -v "it/s\|s/it" | tail -3
python3 -m ddpm_lib.evaluator $W/b5/sde50 --train_dir $W/mnist_rgb --device cuda > $R/score_b5_sde50.txt 2>&1
echo "EVALUATOR rc $?"; cat $R/score_b5_sde50.txt
echo "--- issue 12 on CUDA"
echo "# a second set into the same folder with another sampler"
python3 -m ddpm_lib.generate --checkpoint $W/b5/ck/best_model.pt --output_dir $W/b5/sde50 --batch_size 10000 \
  --sampler ddim --sampling_steps 50 2>&1 | tail -2; echo "rc ${PIPESTATUS[0]}"
ls $W/b5/sde50 | wc -l
echo "# --device cuda:7 on a one-GPU machine"
python3 -m ddpm_lib.train --data_path $W/mnist_rgb --device cuda:7 --checkpoint_dir $W/c7 --sample_dir $W/c7s 2>&1 | tail -2; echo "rc ${PIPESTATUS[0]}"
echo "# --lr 1e6, compiled with CUDA graphs (cache warm)"
s=$(date +%s%N)
python3 -m ddpm_lib.train --data_path $W/mnist_rgb --recipe fast --lr 1e6 --epochs 3 --eval_interval 1 \
  --checkpoint_dir $W/nan/ck --sample_dir $W/nan/s > $W/nan.log 2>&1; rc=$?
echo "rc $rc wall $(ms $s) ms"; tr '\r' '\n' < $W/nan.log | grep -v "it/s\|s/it" | tail -4
ls $W/nan/ck
python3 -m ddpm_lib.generate --checkpoint $W/nan/ck/last.pt --output_dir $W/nan/g --num_images 64 --sampler ddim --sampling_steps 10 2>&1 | tail -2; echo "rc ${PIPESTATUS[0]}"
echo "# --lr 1e6, eager fp16 with a gradient scaler"
python3 -m ddpm_lib.train --data_path $W/mnist_rgb --recipe fast --lr 1e6 --epochs 2 --compile no --precision fp16 \
  --checkpoint_dir $W/nan16/ck --sample_dir $W/nan16/s > $W/nan16.log 2>&1; rc=$?
echo "rc $rc"; tr '\r' '\n' < $W/nan16.log | grep -v "it/s\|s/it" | tail -3
tar czf $R/logs.tgz -C $W $(cd $W && ls *.log)
python3 -c "
from PIL import Image; from pathlib import Path
f=sorted(Path('$W/b5/sde50').glob('*.png'))[:64]
g=Image.new('RGB',(8*28,8*28))
for i,p in enumerate(f): g.paste(Image.open(p),((i%8)*28,(i//8)*28))
g.resize((448,448),Image.NEAREST).save('$R/b5_sde50_first64.png')"
echo ALL DONE
