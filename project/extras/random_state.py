"""RandomState: the random number generators' state travels in every checkpoint, so a resumed run draws the
same shuffles, dropout masks and augmentations as a run that never stopped."""

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RandomState(Callback):
    """Saves the Python, NumPy, PyTorch CPU and CUDA generators when a checkpoint is written, restores them on
    resume. Lightning does not: without this, a resumed run shuffles its next epoch from the fresh seed.

    Only plain data is stored (lists and tensors), so the checkpoint still loads with weights_only=True.
    Under DDP the checkpoint holds rank 0's state and every process gets it back.
    """

    def state_dict(self) -> dict[str, Any]:
        version, python_state, gauss = random.getstate()
        kind, keys, position, has_gauss, cached = np.random.get_state()
        return {
            "python": [version, list(python_state), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, python_state, gauss = state_dict["python"]
        random.setstate((version, tuple(python_state), gauss))
        kind, keys, position, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
