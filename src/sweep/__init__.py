"""Studies as data: ``experiments/*.yaml`` specs expanded into runs, run resumably on this machine or a Ray
cluster, and reported as the paper's figures, aggregate statistics and a claims table.

The command line is ``src/experiments.py``; the guide is ``docs/experiments.md``. One concept per module:

- :mod:`sweep.spec`: reading and validating a spec, expanding it into jobs (training runs, demonstration jobs);
- :mod:`sweep.layout`: where a study keeps its results, logs, demonstrations, state and report;
- :mod:`sweep.commands`: the ``src/main.py`` / ``src/demos.py`` command line of a job;
- :mod:`sweep.state`: what is on disk for each job (done, resumable, failed), attempts and the driver lock;
- :mod:`sweep.reuse`: starting a study with another study's jobs of the same settings (``run --from``);
- :mod:`sweep.throughput`: measured env steps/s per algorithm and map, updated from finished runs' logs;
- :mod:`sweep.plan`: the plan (runs, env steps) and its estimated time, by simulating the schedule;
- :mod:`sweep.progress`: the live progress line;
- :mod:`sweep.executor`: the executor contract and the local executor (N processes on this machine);
- :mod:`sweep.ray_executor`: the Ray executor (one task per job, shared storage or results pulled back);
- :mod:`sweep.runner`: the scheduling loop shared by both executors (dependencies, resume, Ctrl-C);
- :mod:`sweep.curves`: per-seed learning curves of a study's runs;
- :mod:`sweep.stats`: steps-to-threshold, area under the curve, rliable aggregates and hypothesis tests;
- :mod:`sweep.claims`: the paper's claims as data, each judged holds / does not hold / inconclusive;
- :mod:`sweep.figures` and :mod:`sweep.report`: the figures and ``report.md``.
"""
