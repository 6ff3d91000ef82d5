"""Resume checkpoints of :func:`pipeline.engine.trainer.train`: the model, optimiser, grad scaler, the
per-step records and every rank's RNG states, written atomically by rank 0 under a key (the stage's
params, inputs and code: :func:`stages.common.run_key`). A resume file is a cache: one that is missing,
damaged, of another key or that does not fit the model means starting over, never failing."""
from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.engine import distributed


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_resume(path: Path | None, key: str) -> dict | None:
    """The resume state at ``path`` if it was written for ``key``; None when there is none or it cannot be
    read."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return None
    return state if isinstance(state, dict) and state.get("key") == key else None


def restore_resume(path: Path, state: dict, required: tuple[str, ...], model: nn.Module,
                   optimizer: torch.optim.Optimizer, scaler) -> bool:
    """Load ``state``'s model, optimizer and scaler states (with the keys ``required`` present). A state that
    does not fit (weights of other names or shapes, another optimizer) leaves all three untouched and warns.
    Returns whether it was restored."""
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), scaler.state_dict()))
    try:
        missing = [key for key in ("model", "optimizer", "scaler", *required) if key not in state]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        return True
    except Exception as exc:  # RuntimeError (shapes, names), ValueError (optimizer groups), KeyError
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        scaler.load_state_dict(saved[2])
        if distributed.is_main():
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"warning: {path}: the resume state does not fit this run ({reason}); starting over",
                  file=sys.stderr)
        return False


def save_resume(path: Path, state: dict) -> None:
    from pipeline.engine.atomic import save_torch

    save_torch(state, path)


def write_checkpoint(path: Path, key: str, model: nn.Module, optimizer, scaler, records: list) -> None:
    """Write the resume state after ``len(records)`` steps (rank 0; every rank's RNG states gathered)."""
    rngs = [rng_state()]
    if distributed.world_size() > 1:
        rngs = [None] * distributed.world_size()
        torch.distributed.all_gather_object(rngs, rng_state())
    if distributed.is_main():
        save_resume(path, {"key": key, "step": len(records), "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                           "records": records, "rng": rngs, "world_size": distributed.world_size()})
    distributed.barrier()
