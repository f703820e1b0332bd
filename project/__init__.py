"""An image classifier on PyTorch Lightning. The core, read first: cli.py, classifier.py, models/, optim.py, data/.
The run layer around it (project/run/) is what train.py adds; the extras (project/extras/) are wired in by config."""
