"""The planted world: real animal cut-outs on real background photos, with a known bias.

assets.py    where the packaged photos are; the committed manifest of what each shows
spec.py      a world's settings and its plant (per class: planted common and counter)
compose.py   cut-out on a random background crop
generate.py  build OUT: training split, candidate pool, balanced grid, ground truth
candidates.py  the pool as a URL list for a loopback server
train.py     the reference model: a small open_clip config trained with ClipLoss (or a second one)
reference.py a world built, trained and its oracle computed, reusing what is done
judge.py     a run's proposals against the oracle: recall, false positives, why each miss
run_config.py  the run config for curating the pool (init --world)
oracle.py    the model's accuracy per class x background on the grid; oracle counter and drop
stats.py     Wilson and Newcombe intervals
"""
