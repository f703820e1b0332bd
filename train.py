"""Train and test an image classifier: `python train.py --help` lists every option."""

import sys

if __name__ == "__main__":
    from project.run.signals import ctrl_c_held, note_stop_signals

    note_stop_signals()  # before the seconds that importing torch and Lightning takes
    with ctrl_c_held():
        from project.run.cli import main

    sys.exit(main())
