"""What every stage shares, one topic per module: output locations and the dataset index (paths), process
pools and progress (pools), mask evaluation (evaluation), data loaders (loaders), resume keys
(resume_keys), outputs written by every rank (sharded). This module names them all."""
from stages.common.evaluation import evaluate_mask_dir, iou_report, write_eval
from stages.common.loaders import load_image_and_cam, training_loader
from stages.common.paths import index_path, load_index, open_split, require, stage_dir
from stages.common.pools import num_workers, parallel_map, progress_bar, track
from stages.common.resume_keys import clear_resume, resume_path, run_key
from stages.common.sharded import resumable_output, shared_output, todo

__all__ = [
    "clear_resume", "evaluate_mask_dir", "index_path", "iou_report", "load_image_and_cam", "load_index",
    "num_workers", "open_split", "parallel_map", "progress_bar", "require", "resume_path", "resumable_output",
    "run_key", "shared_output", "stage_dir", "todo", "track", "training_loader", "write_eval",
]
