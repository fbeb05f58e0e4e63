"""``make bench``: each performance measure of the project beside its reference, in one process.

Every measure runs our code and a reference implementation of the same computation on the same
inputs, interleaved (ours, reference, reference, ours, ...) and repeated; the table reports the
medians and their ratio, because on a machine shared with other jobs absolute times drift while
the ratio of interleaved runs does not. ``python -m bench`` prints the table, writes
``bench/results/latest.{md,csv}`` and exits 1 when a target is missed (docs/bench.md).
"""
