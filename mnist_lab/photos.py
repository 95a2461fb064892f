"""Render a labelled set of phone photos of MNIST test digits: ``python -m mnist_lab.photos``
(the code: :mod:`mnist_lab.tools.photos`)."""

from mnist_lab.tools.photos import main

if __name__ == "__main__":
    main()
