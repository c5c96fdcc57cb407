#!/usr/bin/env bash
# Issue 21: oracle run, 4c SNR 1 pool of 240, 8% flipped answers, kt; code frozen in /work/flip-wt; one thread.
# usage: trainonly.sh SEED audit|noaudit
S=$1; MODE=$2
[ "$S $MODE" = "3 noaudit" ] && { echo "SKIPPED 3 noaudit (session time)"; exit 0; }
cd /work/flip-wt
export PYTHONPATH=/work/flip-wt OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
py=/work/main/.venv/bin/python
D=/work/main/benchmarks/results/speed-paired/data
if [ "$MODE" = audit ]; then P=/work/runs/flip-seed$S; R=/work/runs/flip-seed0/recipe.toml; else P=/work/runs/flip-noaudit-seed$S; R=/work/runs/quick-audit0.toml; fi
[ -f $P/history.csv ] && [ $(wc -l < $P/history.csv) -ge 8 ] && { echo "DONE ALREADY $P"; exit 0; }
$py -m napari_ktal.cli train --project $P --recipe $R $D/train --oracle $D/train/labels.csv --test $D/test/labels.csv \
    --flip-answers 0.08 --seed $S --device cpu > $P.train.log 2>&1 || { echo "FAILED $P"; exit 1; }
echo "TRAINED $P $(date -u +%H:%M)"
