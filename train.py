"""Train and test an image classifier: `python train.py --help` lists every option."""

import sys

if __name__ == "__main__":
    from project import note_stop_signals

    note_stop_signals()  # before the seconds that importing torch and Lightning takes
    from project.cli import main

    sys.exit(main())
