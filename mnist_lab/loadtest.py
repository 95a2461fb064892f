"""Load-test the prediction server: ``python -m mnist_lab.loadtest`` (the code:
:mod:`mnist_lab.tools.loadtest`)."""

from mnist_lab.tools.loadtest import main

if __name__ == "__main__":
    main()
