"""What the served model carries, fitted on held-out predictions: one module per fit.

* :mod:`.recalibration`: the temperature and floor (``evaluation.calibration``);
* :mod:`.operating_point`: the threshold on p(``reporting.positive_class``);
* :mod:`.conformal`: the conformal threshold, with the probability settings of
  ``serving.json``;
* :mod:`.ood`: the out-of-distribution score (``ood.npz``).

The maths of each lives in :mod:`breast_cancer_pipeline.evaluation`. The fold ensemble is
fitted by the finetune stage (``evaluation.folds``) and bundled by
:func:`~breast_cancer_pipeline.pipelines.reporting.nodes.package_model`.
"""
