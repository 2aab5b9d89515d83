#!/bin/sh
# Every $validation_every-th row goes to validation, the rest to train.
set -eu
every=$(sed -n 's/.*"validation_every":\([0-9]*\).*/\1/p' "$VLMFLOW_PARAMS")
mkdir -p data/split
awk -F, -v every="$every" -v dir=data/split '
  NR == 1 { print > (dir "/train.csv"); print > (dir "/validation.csv"); next }
  { print > (dir "/" ((NR - 2) % every == 0 ? "validation" : "train") ".csv") }
' data/shapes.csv
