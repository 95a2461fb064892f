"""Evaluation layer: the one inference function (``inference.predict_proba``), metrics,
figures, run logs, ensembles, the robustness suite, the export and its parity check.

May import the core, ``data``, ``models``, ``training`` and ``serving``; never a command.
"""
