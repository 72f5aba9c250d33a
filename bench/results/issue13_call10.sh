#!/usr/bin/env bash
# Issue 13, call 10 (one H100): fp16 forced end to end against bf16, and --time_budget 2 / 5 min.
# Runs in the background (setsid); results land in /tmp/w/out, copied to $OUT by the polling calls.
set -u
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
rm -rf /tmp/w/code; cp -r .gpu/code /tmp/w/code; cd /tmp/w/code  # a later call replaces .gpu
export PYTHONPATH=/tmp/site:$PWD
W=/tmp/w; R=$W/out; mkdir -p $R
nvidia-smi -L; cat COMMIT
t0=$(date +%s)
[ -d $W/mnist_rgb ] || python3 -m ddpm_lib.data --out $W/mnist_rgb --source local --local $OLDPWD/.gpu > $W/data.log 2>&1 || { cat $W/data.log; exit 1; }
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
  echo "TRAIN $name: rc $? wall $(ms $s) ms"; grep -h "training on\|compiled\|budget\|done:\|epoch.*/" $W/$name.log | tail -4
  cp $W/$name/ck/eval_log.csv $R/eval_log_$name.csv
}
gen() {  # name precision: 10,000 DDPM-1000 PNGs, forced to that autocast precision, then scored
  local name=$1 precision=$2 s
  s=$(date +%s%N)
  python3 -c "
import sys, ddpm_lib.runtime as r
resolve = r.resolve_precision
r.resolve_precision = lambda choice, device: resolve('$precision' if choice == 'auto' else choice, device)
from ddpm_lib.generate import main
main(sys.argv[1:])" --checkpoint $W/$name/ck/best_model.pt --output_dir $W/$name/gen --batch_size 10000 >> $W/$name.log 2>&1
  echo "GENERATE $name ($precision): rc $? wall $(ms $s) ms"
  python3 -m ddpm_lib.evaluator $W/$name/gen --train_dir $W/mnist_rgb --device cuda > $R/score_$name.txt 2>&1
  cat $R/score_$name.txt
  npz $W/$name/gen $R/${name}__ddpm1000_seed0.npz
}
step() { case " ${STEPS:-all} " in *" $1 "*|*" all "*) return 0;; *) return 1;; esac; }
step fp16 && { train fp16 --precision fp16; gen fp16 fp16; }
step budget2 && { train budget2 --epochs 400 --time_budget 2; gen budget2 bf16; }
step budget5 && { train budget5 --epochs 400 --time_budget 5; gen budget5 bf16; }
step budget10 && { train budget10 --epochs 400 --time_budget 10; gen budget10 bf16; }
step resume || { echo ALL DONE; exit 0; }
# fp16 resume: stopped after 2 of 4 epochs (eager, short), the scaler state loaded is the one saved
D="--data_path $W/mnist_rgb --recipe fast --checkpoint_dir $W/fp16_resume --sample_dir $W/fp16_resume_s --precision fp16 --compile no --epochs 4 --eval_interval 2"
python3 -m ddpm_lib.train $D --max_steps 234 > $W/fp16_resume.log 2>&1; echo "fp16 2 of 4 epochs: rc $?"
python3 - <<PY
import torch
from ddpm_lib.train import TrainConfig, Training
saved = torch.load("$W/fp16_resume/last.pt", "cpu", weights_only=True)
config = TrainConfig.from_recipe("fast", data_path="$W/mnist_rgb", checkpoint_dir="$W/fp16_resume",
                                 sample_dir="$W/fp16_resume_s", precision="fp16", resume="last",
                                 epochs=4, eval_interval=2, compile="no")
t = Training(config)
print("saved at step", saved["step"], "scaler:", saved["grad_scaler"])
print("loaded scaler:", t.scaler.state_dict(), "step", t.step)
print("RESUME SCALER EXACT:", t.scaler.state_dict() == saved["grad_scaler"])
PY
python3 -m ddpm_lib.train $D --resume >> $W/fp16_resume.log 2>&1; echo "fp16 resumed to 4 epochs: rc $?"
grep -h "steps\|epoch" $W/fp16_resume.log | tail -5
python3 -c "import torch; s = torch.load('$W/fp16_resume/last.pt', 'cpu', weights_only=True); print('after resume: step', s['step'], s['grad_scaler'])"
tar czf $R/logs.tgz -C $W $(cd $W && ls *.log)
echo ALL DONE
