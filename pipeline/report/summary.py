"""The run at a glance (``wsss-pipe summary``): one row per evaluated artifact of the pipeline, built from
the records the stages write (their ``details.json``), never recomputed.

Each row: its mIoU, its gain over the artifact it refines (:func:`pipeline.report.scores.lineage`, the same
pairs as the inspection report; the CAM's over the all-background guess that ``eval_cam`` records), what the
figure was measured with (the CAM's threshold, the split, the segmentation protocol), and the wall time
its training and evaluation stages recorded (``seconds``; the per-image stages between them, ``cam``,
``walk``, ``crf``..., write no record and are not counted). When a model trained the same way on ground
truth was evaluated too, the weak/full ratio. Rows whose records are missing are listed as absent.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.report.scores import lineage, stage_names, walk_keys


@dataclass(frozen=True)
class SummaryRow:
    """One row: ``key`` (a report stage of :func:`~pipeline.report.scores.stage_names`, or a ground-truth
    model), the ``artifact`` it scores, and the ``tag`` of its outputs: ``method``, ``seg`` / ``seg_gt``
    (``<method>_pseudo`` / ``<method>_gt``), ``single`` / ``single_full`` (``<supervision>_<loss>`` /
    ``full_<loss>``). The stages that evaluate it and whose wall time it costs, and the split it is
    measured on, come from the stage table (:func:`stages.artifacts.summary_rows`)."""

    key: str
    name: str
    artifact: str
    tag: str
    evaluation: str = ""
    timed: tuple[str, ...] = ()
    split: str = "train"


def report_rows() -> tuple[SummaryRow, ...]:
    """The rows, in pipeline order: the CAM, one walk per registered propagation method (its key and
    artifact: the method's name), the pseudo mask, the segmentation models."""
    names = stage_names()
    return (
        SummaryRow("cam", names["cam"], "cam", "method"),
        *(SummaryRow(name, names[name], name, "method") for name in walk_keys()),
        SummaryRow("pseudo", names["pseudo"], "pseudo", "method"),
        SummaryRow("pred", "DeepLab", "pred", "seg"),
        SummaryRow("gt", "DeepLab on GT", "pred", "seg_gt"),
        SummaryRow("single", "single stage", "single", "single"),
        SummaryRow("single_full", "single stage on GT", "single", "single_full"),
    )


# weak model -> the same training on ground truth: the rows whose ratio the summary reports
FULL = {"pred": "gt", "single": "single_full"}
BACKGROUND = "background"


def parents(crf_source: str) -> dict[str, str]:
    """What each row refines: the report's lineage, and the CAM against the all-background guess."""
    return {"cam": BACKGROUND} | lineage(crf_source)


def _setting(row: SummaryRow, record: dict) -> str:
    if row.key == "cam":
        return f"threshold {record['best_threshold']:g}"
    split = row.split
    text = f"{split} ({record['num_images']} images)" if "num_images" in record else split
    return f"{text}, {record.get('protocol_description') or record['protocol']}" if "protocol" in record else text


def build_summary(records: dict[str, dict | None], timings: dict[str, dict[str, float]], crf_source: str,
                  single_supervision: str = "scribble", rows: tuple[SummaryRow, ...] | None = None) -> dict:
    """The summary of a run: ``records`` maps a row key to its evaluation record (None when absent),
    ``timings`` a row key to {stage: seconds} of the stages that recorded one. A plain-JSON dict:
    ``rows`` (every row of ``rows``, default :func:`report_rows`, present or not; the all-background guess
    first) and ``ratios``
    (weak/full for each pair of :data:`FULL` with both present)."""
    cam = records.get("cam")
    miou = {BACKGROUND: cam.get("all_background_miou")} if cam else {}
    miou |= {key: record["miou"] for key, record in records.items() if record is not None}
    links = parents(crf_source)
    table = [{"key": BACKGROUND, "stage": "all background", "present": BACKGROUND in miou,
              "miou": miou.get(BACKGROUND), "refines": None, "gain": None, "setting": "train", "seconds": {},
              "total_seconds": None}]
    for row in rows or report_rows():
        if row.key == "single_full" and single_supervision == "full":
            continue  # the single stage is itself the fully supervised one
        record = records.get(row.key)
        parent = links.get(row.key)
        gain = (round(miou[row.key] - miou[parent], 6)
                if record is not None and miou.get(parent) is not None else None)
        seconds = timings.get(row.key, {})
        table.append({"key": row.key, "stage": row.name, "present": record is not None,
                      "miou": miou.get(row.key), "refines": parent, "gain": gain,
                      "setting": _setting(row, record) if record is not None else None,
                      "seconds": seconds, "total_seconds": round(sum(seconds.values()), 2) if seconds else None})
    ratios = {weak: {"full": full, "ratio": round(miou[weak] / miou[full], 4)}
              for weak, full in FULL.items() if miou.get(weak) is not None and miou.get(full)}
    return {"rows": table, "ratios": ratios}


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def summary_table(summary: dict, title: str):
    """The summary as a :class:`rich.table.Table` (absent rows dimmed, losses in red)."""
    from rich.table import Table

    names = {row["key"]: row["stage"] for row in summary["rows"]}
    table = Table(title=title, title_justify="left")
    for header, justify in (("stage", "left"), ("mIoU", "right"), ("gain", "right"), ("over", "left"),
                            ("measured on", "left"), ("train+eval s", "right")):
        table.add_column(header, justify=justify)
    for row in summary["rows"]:
        if not row["present"]:
            table.add_row(row["stage"], "absent", "", "", "", "", style="dim")
            continue
        gain = _percent(row["gain"], signed=True)
        if row["gain"] is not None and row["gain"] < 0:
            gain = f"[red]{gain}[/red]"
        seconds = "" if row["total_seconds"] is None else f"{row['total_seconds']:.0f}"
        table.add_row(row["stage"], _percent(row["miou"]), gain, names.get(row["refines"], "") if gain else "",
                      row["setting"] or "", seconds)
    for weak, ratio in summary["ratios"].items():
        table.add_row(f"{names[weak]}: weak/full", f"{ratio['ratio']:.2f}", "", names[ratio["full"]], "", "",
                      style="bold")
    return table
