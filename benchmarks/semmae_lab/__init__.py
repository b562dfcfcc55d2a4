"""The experiment package beside the benchmarks, never installed: the reproduction harness, the pre-registered
campaigns, their reports, and the timing helpers. Used by ``benchmarks/*.py`` (run as ``python benchmarks/x.py``,
so ``benchmarks/`` is on ``sys.path``) and their tests, never by the library: nothing under ``src/semmae`` imports
it (``tests/test_import_layers.py``).

* :mod:`~semmae_lab.harness` (with :mod:`~semmae_lab.preset`, :mod:`~semmae_lab.grid`,
  :mod:`~semmae_lab.repro_report`) - the reproduction harness (``benchmarks/repro.py``);
* :mod:`~semmae_lab.campaign` (with :mod:`~semmae_lab.plan`, :mod:`~semmae_lab.campaign_report`) - pre-registered
  paired campaigns on it (``benchmarks/campaign.py``);
* :mod:`~semmae_lab.part_runs` - the part benchmarks' runs (``benchmarks/parts_cub.py``,
  ``benchmarks/bootstrap_compare.py``); :mod:`~semmae_lab.side_by_side` - configs run in spawned processes;
* :mod:`~semmae_lab.subsets` - class-balanced subsets of a split; :mod:`~semmae_lab.probes` - the probes on the fast
  linear probe's saved features; :mod:`~semmae_lab.tables` - the part and mean/std tables;
* :mod:`~semmae_lab.bench` (a quiet measured run, a held batch, timed steps), :mod:`~semmae_lab.timing` (synchronise,
  functions timed in turns, step windows, logged rates), :mod:`~semmae_lab.results_table` (rows and markdown tables,
  the machine line) - the timing benchmarks' helpers.

What the library's own chained stages share stays in it: :mod:`semmae.engine.stage_runner` (the one stage runner
and its done-files, which the demo, the harness and the campaigns all run their stages on),
:mod:`semmae.engine.run_checkpoints` and :func:`semmae.parts.checkpoint.part_checkpoint` (the checkpoint a finished
run hands on), :func:`semmae.demo.recipe.part_learning_config` (the part stage's config, the demo's and the lab's);
the lab imports them from there. Stages are chained in this process from typed configs
(:func:`semmae.cli.stage_config`, :func:`semmae.cli.run_stage`), never through argv.
"""
