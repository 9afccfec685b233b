"""Controlled experiments: does changing the background help a classifier?

One config (:mod:`bglab.experiment.config`) names the data sources, the protocols (which parts train and
test), the preprocessing *arms* (:class:`bglab.pipeline.Pipeline` configs), model / training *variants* and
the seeds. :func:`bglab.experiment.runner.run_experiment` preprocesses every arm once (cached), trains every
protocol x arm x variant x seed on identical splits with identical data order and initial weights, evaluates
every N epochs on every test set (clean and distorted), and is resumable; :mod:`bglab.experiment.report` writes
``summary.json`` and a self-contained ``report.html``; :mod:`bglab.experiment.stats` holds the tests
(t-interval, McNemar, paired bootstrap). Needs the ``train`` extra (torch, safetensors, pandas, matplotlib).
"""
