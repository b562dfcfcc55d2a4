"""The pipeline layer: what chains the stages (``semmae demo``, ``benchmarks/repro.py``, the campaigns, the part
benchmarks) shares, above every stage and below no one.

* :mod:`~semmae.pipeline.marks` - a stage's done-file (``<folder>/stages/<name>.json``): run once, reuse after;
* :mod:`~semmae.pipeline.checkpoints` - the checkpoint a finished run left (:func:`semmae.utils.io.checkpoint_file`);
* :mod:`~semmae.pipeline.subsets` - class-balanced subsets of a split (:mod:`semmae.data.subset`);
* :mod:`~semmae.pipeline.probes` - the probes on the fast linear probe's saved features (weighted kNN, logistic
  regression);
* :mod:`~semmae.pipeline.harness` (with :mod:`~semmae.pipeline.preset`, :mod:`~semmae.pipeline.grid`,
  :mod:`~semmae.pipeline.repro_report`) - the reproduction harness; :mod:`~semmae.pipeline.campaign` (with
  :mod:`~semmae.pipeline.campaign_report`) - pre-registered paired campaigns on it.

Stages are chained in this process from typed configs (:func:`semmae.cli.stage_config`, :func:`semmae.cli.run_stage`),
never through argv. Nothing below this package imports it.
"""
