"""Serving layer: image preprocessing, the predictor interface with its ONNX Runtime
implementation, and the HTTP app. Imports no torch, Lightning or torchvision (an import-linter
contract in pyproject.toml), so an ``.onnx`` server starts in about a second in ~1/4 the memory.

May import the core (``errors``, ``paths``) only.
"""
