#!/usr/bin/env bash
# usage: review.sh PROJECT SEED REPEATS — ktal-cryo review on frozen code in /work/review-wt, one thread
P=$1; S=$2; R=$3
cd /work/review-wt
export PYTHONPATH=/work/review-wt OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
/work/main/.venv/bin/python -m napari_ktal.cli review --project $P --out $P/suspects.csv --device cpu --seed $S --repeats $R > $P.review.log 2>&1 && echo "REVIEWED $P $(date -u +%H:%M)"
