"""The report's artifacts (:func:`pipeline.report.scores.stage_names`: cam, one walk per propagation method,
pseudo, pred, single) in
the stage table (:mod:`stages.table`): the stage that writes each, the folder inside its directory, the
stage that scores it and the one that trains the network making it; and from them the summary's rows
(:func:`pipeline.report.summary.report_rows`) with the stages they read and time."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from pipeline.report.summary import SummaryRow, report_rows
from stages.table import PROPAGATION, STAGES, output_dir


class Artifact(NamedTuple):
    stage: str
    inner: str
    evaluation: str
    trained: str | None


ARTIFACTS = {
    "cam": Artifact("cam", "", "eval_cam", "train_cls"),
    # each propagation method's walk, keyed by the method's name (the report's key)
    **{name: Artifact(f"walk@{name}", "", f"eval_walk@{name}", f"train_prop@{name}") for name in PROPAGATION},
    "pseudo": Artifact("crf", "", "eval_pseudo", None),
    "pred": Artifact("eval_seg", "pred", "eval_seg", "train_seg"),
    "single": Artifact("eval_single", "pred", "eval_single", "train_single"),
}


def artifact_dir(params, artifact: str) -> Path:
    """The folder holding ``artifact`` for this run."""
    stage, inner, _, _ = ARTIFACTS[artifact]
    return output_dir(params, stage) / inner if inner else output_dir(params, stage)


def summary_rows() -> tuple[SummaryRow, ...]:
    """:func:`~pipeline.report.summary.report_rows` with the stage that evaluates each row's artifact, the stages
    whose wall time it costs (training and evaluation) and the split it is measured on (val where the
    evaluation reads ``data.val_split``)."""
    rows = []
    for row in report_rows():
        artifact = ARTIFACTS[row.artifact]
        split = "val" if "data.val_split" in STAGES[artifact.evaluation].params else "train"
        timed = tuple(stage for stage in (artifact.trained, artifact.evaluation) if stage)
        rows.append(dataclasses.replace(row, evaluation=artifact.evaluation, timed=timed, split=split))
    return tuple(rows)
