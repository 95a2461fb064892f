"""Training layer: the LightningModule, callbacks, trackers, hardware choices, DDP rules,
checkpoints, the config checks and ``fit.train(cfg)``.

May import the core, ``data`` and ``models``; never evaluation, serving or a command.
"""
