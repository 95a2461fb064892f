"""mnist_lab: MNIST digit classifiers with PyTorch Lightning + Hydra."""

__version__ = "0.1.0"
