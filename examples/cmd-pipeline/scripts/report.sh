#!/bin/sh
# Shapes per colour in the training split, and the split sizes as metrics.
set -eu
mkdir -p reports
awk -F, 'NR > 1 { n[$2]++ } END { for (c in n) print c, n[c] }' data/split/train.csv | sort > reports/colours.txt
train=$(($(wc -l < data/split/train.csv) - 1))
validation=$(($(wc -l < data/split/validation.csv) - 1))
printf '{"train_rows": %d, "validation_rows": %d}\n' "$train" "$validation" > reports/metrics.json
