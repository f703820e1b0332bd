"""Train and test an MNIST-family classifier: `python train.py --help` lists every option."""

import sys

from project.cli import main

if __name__ == "__main__":
    sys.exit(main())
