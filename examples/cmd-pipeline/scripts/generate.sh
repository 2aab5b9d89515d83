#!/bin/sh
# Draw $count shapes from a linear congruential generator seeded by $seed (both from $VLMFLOW_PARAMS).
set -eu
param() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$VLMFLOW_PARAMS"; }
count=$(param count)
seed=$(param seed)
mkdir -p data
awk -v n="$count" -v seed="$seed" 'BEGIN {
  split("red green blue yellow purple orange", colour, " ")
  split("circle square triangle cross diamond", shape, " ")
  split("small large", size, " ")
  split("top-left top top-right left centre right bottom-left bottom bottom-right", where, " ")
  x = seed
  print "id,colour,shape,size,position,caption"
  for (i = 0; i < n; i++) {
    x = (1103515245 * x + 12345) % 2147483648; c = colour[x % 6 + 1]
    x = (1103515245 * x + 12345) % 2147483648; s = shape[x % 5 + 1]
    x = (1103515245 * x + 12345) % 2147483648; z = size[x % 2 + 1]
    x = (1103515245 * x + 12345) % 2147483648; p = where[x % 9 + 1]
    printf "%05d,%s,%s,%s,%s,a %s %s %s at the %s\n", i, c, s, z, p, z, c, s, p
  }
}' > data/shapes.csv
