"""hardexit's benchmarks: one module per question, run from the repository root.

- ``python -m benchmarks.overshoot``: how late each way to exit at a deadline
  exits, and whether it says what was stuck;
- ``python -m benchmarks.first_arm``: the cold first arm under 32 busy threads;
- ``python -m benchmarks.arm_cost``: arm + cancel, beside the other mechanisms,
  live guards and busy threads, on each ``--python`` given;
- ``python -m benchmarks.import_cost``: ``import hardexit``, its threads, and
  what arming and firing import;
- ``python -m benchmarks.fleet``: the livekit fleet soak;
- ``python -m benchmarks.parent_death``: arm_on_parent_death in a pool, and
  what PR_SET_PDEATHSIG would add.

benchmarks/README.md has the figures.
"""
