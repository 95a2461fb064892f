"""Data layer: the MNIST files, the splits, batching, augmentation and the corruption suite.

May import the core (``paths``, ``errors``); never training, evaluation or serving.
"""
