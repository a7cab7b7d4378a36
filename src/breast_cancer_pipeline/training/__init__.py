"""Training: everything between the model-input arrays and a trained classifier.

Used alike by the ``finetune`` stage (and each fold of its cross-validation), backbone
selection and the benchmarks, through the public names of its modules:

- :mod:`.options`: the values of the ``finetune.strategy`` and ``finetune.mixed_precision``
  parameters (no TensorFlow: the parameter schema imports it).
- :mod:`.plan`: :class:`~.plan.FinetunePlan`, what a run does, resolved from the parameters
  and the head search, and :class:`~.plan.TrainingRun`, what its phases share.
- :mod:`.data`: the ``tf.data`` input pipeline over memory-mapped arrays, and class weights.
- :mod:`.distribution`: the ``tf.distribute`` strategy.
- :mod:`.precision`: the Keras dtype policy (mixed precision).
- :mod:`.checkpoints`: resumable phases: Keras's backup, the run's record, the fingerprint.
- :mod:`.progress`: a log line and published metrics per epoch.
- :mod:`.callbacks`: the callbacks of one phase, in the order they must run.
- :mod:`.phases`: compile, unfreeze, and the two fit phases (the head on the frozen base,
  then the base unfrozen with BatchNorm kept in inference mode).
- :mod:`.run`: one whole training run, from the strategy to the float32 classifier.

This package imports nothing at import time; every module but :mod:`.options` and
:mod:`.plan` imports TensorFlow, so import them inside the nodes that train.
"""
