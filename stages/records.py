"""What a stage records of its run: ``metrics.json`` (the headline figures, what `dvc metrics show` and
`dvc exp show` list), ``details.json`` (everything it measured: what `wsss-pipe summary` reads) and, for
the epoch-trained stages, the loss history."""
from __future__ import annotations

import csv
from pathlib import Path

from pipeline.engine.atomic import atomic_path, write_json

# The keys metrics.json may hold and their types: one `dvc metrics show` column each, so that the table of
# every stage fits in 120 columns.
HEADLINE = {"miou": float, "best_threshold": float, "split": str, "protocol": str, "loss": float, "seconds": float}


def _headline(key: str, value) -> bool:
    kind = HEADLINE.get(key)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return kind is not None and isinstance(value, kind)


def write_metrics(out: Path, record: dict) -> None:
    """``details.json``: the whole ``record``, and ``metrics.json``: its :data:`HEADLINE` figures (a key of
    another type, e.g. train_single's loss name, stays in details.json only)."""
    write_json(out / "details.json", record)
    write_json(out / "metrics.json", {k: v for k, v in record.items() if _headline(k, v)})


def write_history(out: Path, history: list[dict]) -> None:
    """An epoch-trained stage's loss history: ``history.csv`` (one row per epoch, one column per loss term)
    and ``loss_terms.csv`` (epoch, term, value: the same figures, one row per term, which `dvc plots`
    draws as one line per term with ``.dvc/plots/loss_terms.json`` whatever terms the method logs)."""
    terms = [k for k in history[0] if k != "epoch"]
    with atomic_path(out / "history.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch"] + terms)
        writer.writeheader()
        writer.writerows(history)
    with atomic_path(out / "loss_terms.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "term", "value"])
        writer.writerows([[row["epoch"], term, row[term]] for row in history for term in terms])
