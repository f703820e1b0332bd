"""The run layer: what makes the core (project.cli) a product. train.py is the core plus this layer: named run
folders and `--ckpt_path last`, locks, flat Trainer flags, a switched class's own defaults, one-line errors, stop
signals while loading, path expansion, device checks and `--help`. It imports the core, never an extra."""
