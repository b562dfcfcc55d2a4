"""``semmae export``: a checkpoint in the form users load it, all in this package:

* :mod:`semmae.export.cli` - the verb: resolves the checkpoint (file or run folder) once, loads it once, and hands
  path and content to the exporter its kind needs (:func:`semmae.export.cli.export_checkpoint`);
* :mod:`semmae.export.encoder` - a pretraining or bootstrap checkpoint's encoder as a timm model folder or one
  safetensors file;
* :mod:`semmae.export.model_card` - the ``README.md`` model card of an exported encoder, written from its run;
* :mod:`semmae.export.part_learner` - a part checkpoint (``semmae parts train``) as the part learner's folder of
  Sec. 3.1 (its head and its frozen encoder); :mod:`semmae.parts.checkpoint` reads it back;
* :mod:`semmae.export.hub` - ``--push-to-hub``: the folder uploaded to the Hugging Face Hub.

This stage sits above the foundations (``engine/``, ``models/``) and the parts stage. Importing this package or
its CLI imports no torch (``semmae --help``).
"""
