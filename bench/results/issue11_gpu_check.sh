#!/usr/bin/env bash
# Issue 11: the refactored library on a GPU: short fast-recipe run, resume, generate, evaluator.
set -u
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
W=/tmp/w; mkdir -p $W; nvidia-smi -L; git log --oneline -1
python3 -m ddpm_lib.data --out $W/mnist_rgb --source local --local .gpu > $W/data.log 2>&1 || { tail -5 $W/data.log; exit 1; }
s=$(date +%s)
python3 -m ddpm_lib.train --recipe fast --epochs 6 --max_steps 351 --data_path $W/mnist_rgb --checkpoint_dir $W/ck --sample_dir $W/s 2>&1 | tail -6
python3 -m ddpm_lib.train --recipe fast --epochs 6 --resume --data_path $W/mnist_rgb --checkpoint_dir $W/ck --sample_dir $W/s 2>&1 | tail -6
echo "train (two parts) $(( $(date +%s) - s )) s"; echo "rc of last $?"
python3 -m ddpm_lib.generate --checkpoint $W/ck/best_model.pt --output_dir $W/g --num_images 2000 --batch_size 1000 2>&1 | tail -2
python3 -m ddpm_lib.generate --checkpoint $W/ck/best_model.pt --output_dir $W/g2 --num_images 10000 --batch_size 10000 --sampler dpm++sde --sampling_steps 50 2>&1 | tail -2
python3 -m ddpm_lib.fid --check $W/g2; echo "fid --check rc $?"
# note: the "fid rc" echoed below is tail's exit status, not fid's (a mistake in this script)
python3 -m ddpm_lib.fid $W/g2 $W/mnist_rgb 2>&1 | tail -2; echo "fid rc $?"
python3 -m ddpm_lib.evaluator $W/g2 --train_dir $W/mnist_rgb 2>&1 | tail -6
cp $W/ck/eval_log.csv $OUT/; cp $W/s/*.png $OUT/ 2>/dev/null; ls $OUT
