"""The report's artifacts (:data:`pipeline.report.scores.STAGES`: cam, rw, rw_irn, pseudo, pred, single) in
the stage table (:mod:`stages.table`): the stage that writes each, the folder inside its directory, the
stage that scores it and the one that trains the network making it; and from them the summary's rows
(:data:`pipeline.report.summary.ROWS`) with the stages they read and time."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from pipeline.report.summary import ROWS, SummaryRow
from stages.table import STAGES, output_dir


class Artifact(NamedTuple):
    stage: str
    inner: str
    evaluation: str
    trained: str | None


ARTIFACTS = {
    "cam": Artifact("cam", "", "eval_cam", "train_cls"),
    "rw": Artifact("rw", "", "eval_rw", "train_aff"),
    "rw_irn": Artifact("rw_irn", "", "eval_rw_irn", "train_irn"),
    "pseudo": Artifact("crf", "", "eval_pseudo", None),
    "pred": Artifact("eval_seg", "pred", "eval_seg", "train_seg"),
    "single": Artifact("eval_single", "pred", "eval_single", "train_single"),
}


def artifact_dir(params, artifact: str) -> Path:
    """The folder holding ``artifact`` for this run."""
    stage, inner, _, _ = ARTIFACTS[artifact]
    return output_dir(params, stage) / inner if inner else output_dir(params, stage)


def summary_rows() -> tuple[SummaryRow, ...]:
    """:data:`~pipeline.report.summary.ROWS` with the stage that evaluates each row's artifact, the stages
    whose wall time it costs (training and evaluation) and the split it is measured on (val where the
    evaluation reads ``data.val_split``)."""
    rows = []
    for row in ROWS:
        artifact = ARTIFACTS[row.artifact]
        split = "val" if "data.val_split" in STAGES[artifact.evaluation].params else "train"
        timed = tuple(stage for stage in (artifact.trained, artifact.evaluation) if stage)
        rows.append(dataclasses.replace(row, evaluation=artifact.evaluation, timed=timed, split=split))
    return tuple(rows)
