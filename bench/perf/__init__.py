"""``bench perf``: the cost of each protection per PGD step, measured in fresh children.

- :mod:`.runner`: expands configurations and runs each in a fresh child process;
- :mod:`.worker`: the child that builds a model and times a few PGD steps;
- :mod:`.check`: the CI regression check of cost ratios against a committed baseline;
- :mod:`.preload`: what the forked children import once, before forking;
- :mod:`.strength`: checks that an optimisation keeps the first step's direction;
- :mod:`.optimisations`: the optional speed/memory flags (channels-last, bf16, checkpointing, compile).

See docs/PERFORMANCE.md.
"""
