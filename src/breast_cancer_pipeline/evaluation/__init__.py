"""What a study's figure rests on: one module per subject, shared by training and serving.

* :mod:`.folds`: patient-grouped, stratified k-fold assignment (``evaluation.folds``).
* :mod:`.predictions`: the predictions table of a split and the arrays read from it.
* :mod:`.tta`: test-time augmentation, averaged in probability space (``evaluation.tta``).
* :mod:`.calibration`: temperature scaling and its floor, fitted on held-out predictions
  (``evaluation.calibration``).
* :mod:`.conformal`: split-conformal prediction sets (``inference.serving.conformal``).
* :mod:`.ood`: the out-of-distribution score shipped with the served model
  (``inference.serving.ood``).

The parameters of the ``evaluation`` block are checked by :mod:`.parameters`; defaults live in
``conf/base/parameters_evaluation.yml``. Nothing here imports TensorFlow at module level.
"""
