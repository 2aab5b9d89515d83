#!/usr/bin/env python3
"""Reads every run under a TensorBoard log folder with TensorBoard's own loader (EventAccumulator,
which checks each record's CRCs) and prints {run: {tag: [[step, value], ...]}} as JSON."""

import json
import sys

from tensorboard.backend.event_processing import event_multiplexer

multiplexer = event_multiplexer.EventMultiplexer()
multiplexer.AddRunsFromDirectory(sys.argv[1])
multiplexer.Reload()
out = {}
for run, tags in multiplexer.Runs().items():
    out[run] = {
        tag: [[e.step, e.value] for e in multiplexer.Scalars(run, tag)] for tag in tags["scalars"]
    }
print(json.dumps(out, sort_keys=True))
