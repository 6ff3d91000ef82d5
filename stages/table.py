"""Every stage described once: its module, what it reads (params, code, data) and what it writes, as the
path templates of dvc.yaml (``${paths.outputs}/cam/${method}``).

The CLI makes one subcommand per stage from it; ``inspect``, ``overlays``, ``summary`` and
benchmarks/run_stages.py find the artifacts through it (the report's: :mod:`stages.artifacts`);
tests/test_stage_table.py checks that dvc.yaml declares exactly these params, deps and outputs, and that
the stage's code reads no other. :func:`output_dir` resolves a stage's directory for a run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

OUT = "${paths.outputs}"
METHOD = "${method}"
SEG = "${method}_${train_seg.labels}"
SINGLE = "${single.supervision}_${single.loss}"
# the keys of a dense CRF's kernels (pipeline.pseudo_masks.crf.dense_crf's keyword arguments) in the sections crf and
# propagation.affinitynet.labels (crf_kwargs); those of crf are read by every stage that runs the pseudo-mask CRF
CRF_KERNEL_KEYS = ("iterations", "gauss_sxy", "gauss_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")
CRF_KERNELS = tuple(f"crf.{key}" for key in CRF_KERNEL_KEYS)


@dataclass(frozen=True)
class Stage:
    """One DVC stage (``dvc=False``: a command over the outputs that DVC does not run). ``directory`` is
    where it writes; ``params`` are dvc.yaml's entries (a section, or ``section.key``); ``code`` and
    ``inputs`` its deps; ``outs`` / ``metrics`` / ``plots`` its outputs; ``record`` the JSON file with its
    figures and wall time (details.json)."""

    name: str
    summary: str
    directory: str
    params: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    record: str | None = None
    # the params key of each argument the stage passes to the library (pipeline.errors.ArgumentError):
    # ``arguments`` + the argument's name, unless ``renamed`` names its key
    arguments: str = ""
    renamed: tuple[tuple[str, str], ...] = ()
    distributed: bool = True   # runs under torchrun (DDP training, sharded per-image work)
    gpu_per_image: bool = False  # per-image network forwards: shard over every local GPU by default
    dvc: bool = True

    @property
    def module(self) -> str:
        """The stage's module in stages/ (``walk@irn``: stages/walk.py, run for the method irn)."""
        return self.name.split("@")[0]

    @property
    def item(self) -> str | None:
        """The propagation method of a generic propagation stage (``walk@irn``: irn), else None."""
        return self.name.split("@")[1] if "@" in self.name else None

    @property
    def command(self) -> str:
        """The CLI command (``walk@irn``: ``walk irn``)."""
        return self.module.replace("_", "-") + (f" {self.item}" if self.item else "")

    @property
    def per_method(self) -> bool:
        """Outputs per CAM method: the CLI takes ``--method`` and the lock is per method."""
        return METHOD in self.directory

    @property
    def deps(self) -> tuple[str, ...]:
        return self.inputs + self.code


def _dir(stage: str, tag: str | None = METHOD) -> str:
    return f"{OUT}/{stage}/{tag}" if tag else f"{OUT}/{stage}"


def _trained(name: str, summary: str, params: tuple[str, ...], code: tuple[str, ...], inputs: tuple[str, ...],
             tag: str = METHOD, per_step: bool = False, history: bool = True, **extra) -> Stage:
    """A training stage: model.pt, history.csv (per epoch) and details.json, metrics.json, and its loss plot
    (loss_terms.csv per epoch, or dvclive's per-step metrics)."""
    d = _dir(name, tag)
    return Stage(name, summary, d, params, code, inputs,
                 outs=(f"{d}/model.pt",) + ((f"{d}/history.csv",) if history else ()) + (f"{d}/details.json",),
                 metrics=(f"{d}/metrics.json",),
                 plots=(f"{d}/dvclive/plots/metrics" if per_step else f"{d}/loss_terms.csv",),
                 record=f"{d}/details.json", **extra)


def _evaluation(name: str, summary: str, source: str, params: tuple[str, ...], code: tuple[str, ...],
                extra_plots: tuple[str, ...] = ()) -> Stage:
    """An evaluation of a per-method directory of masks on the measured split: details.json, metrics.json,
    per_class.csv."""
    d = _dir(name)
    return Stage(name, summary, d, ("method", "data.eval_split", "data.train_split", *params), code, (source,),
                 outs=(f"{d}/details.json",), metrics=(f"{d}/metrics.json",),
                 plots=(*extra_plots, f"{d}/per_class.csv"), record=f"{d}/details.json")


def _model_evaluation(name: str, summary: str, model: str, params: tuple[str, ...], code: tuple[str, ...],
                      tag: str, **extra) -> Stage:
    """eval_seg's evaluation of a segmentation model on the val split (eval_seg, eval_single)."""
    d = _dir(name, tag)
    return Stage(name, summary, d, params, code, (model,),
                 outs=(f"{d}/pred", f"{d}/details.json"), metrics=(f"{d}/metrics.json",),
                 plots=(f"{d}/confusion.json", f"{d}/per_class.csv"), record=f"{d}/details.json",
                 gpu_per_image=True, **extra)


def _per_image(name: str, summary: str, params: tuple[str, ...], code: tuple[str, ...], inputs: tuple[str, ...],
               gpu: bool = False, **extra) -> Stage:
    """A per-image stage writing one directory per method."""
    d = _dir(name)
    return Stage(name, summary, d, params, code, inputs, outs=(d,), gpu_per_image=gpu, **extra)


CAM_DIR, EVAL_CAM = _dir("cam"), f"{_dir('eval_cam')}/metrics.json"
WALKS = f"{OUT}/walk"  # every propagation method's walk (crf.source picks one: DVC cannot name it)
TRAINING = ("pipeline/models", "pipeline/engine")
METHOD_OPTIONS = f"methods.{METHOD}."
KERNELS_FROM_CRF = tuple((key.split(".")[1], key) for key in CRF_KERNELS)
DEEPLAB_STRIDE = (("output_stride", "backbone.output_stride"),)

# the registered propagation methods (pipeline.propagation; the table imports no library code, so it names
# them: tests/test_propagation_registry.py checks this list against the registry and dvc.yaml's foreach)
PROPAGATION = ("affinitynet", "irn")
# the library arguments of each method's label step that come from another section than its own
LABEL_ARGUMENTS = {"affinitynet": (("grid_stride", "propagation.affinitynet.train.grid_stride"),),
                   "irn": KERNELS_FROM_CRF}
PROP_CODE = ("pipeline/propagation", "stages/propagation.py")


def prop_dir(stage: str, name: str) -> str:
    """A generic propagation stage's directory: ``<outputs>/<stage>/<propagation method>/<CAM method>``."""
    return f"{OUT}/{stage}/{name}/{METHOD}"


def _propagation(name: str) -> tuple[Stage, ...]:
    """The four generic stages (stages/prop_labels.py, train_prop.py, walk.py, eval_walk.py) for the
    propagation method ``name``: dvc.yaml's ``<stage>@<name>`` (a ``foreach`` over the methods)."""
    section = f"propagation.{name}"
    labels, model, walk = prop_dir("prop_labels", name), f"{prop_dir('train_prop', name)}/model.pt", prop_dir("walk", name)
    train, evaluation = prop_dir("train_prop", name), prop_dir("eval_walk", name)
    return (
        Stage(f"prop_labels@{name}", "A propagation method's relation labels from the CAMs.", labels,
              ("method", f"{section}.labels", f"{section}.train", *CRF_KERNELS, "data.train_split"),
              (*PROP_CODE, "pipeline/pseudo_masks/crf.py", "stages/prop_labels.py"), (CAM_DIR, EVAL_CAM),
              outs=(labels,),
              arguments=f"{section}.labels.", renamed=LABEL_ARGUMENTS.get(name, ())),
        Stage(f"train_prop@{name}", "Train a propagation method's network (AffinityNet, IRN's boundary branch) "
              "on its relation labels.", train, ("seed", "method", "backbone", f"{section}.train", "data.train_split"),
              ("pipeline/propagation", "pipeline/models", "pipeline/engine",
               "stages/train_prop.py", "stages/label_map_training.py"), (labels,),
              outs=(model, f"{train}/history.csv", f"{train}/details.json"), metrics=(f"{train}/metrics.json",),
              plots=(f"{train}/loss_terms.csv",), record=f"{train}/details.json", arguments=f"{section}.train."),
        Stage(f"walk@{name}", "A propagation method's random walk of the CAMs over its network's affinities.", walk,
              ("method", f"{section}.walk", "data.train_split"), (*PROP_CODE, "stages/walk.py"),
              (CAM_DIR, model, EVAL_CAM), outs=(walk,), gpu_per_image=True, arguments=f"{section}.walk."),
        Stage(f"eval_walk@{name}", "A propagation method's walk mask mIoU against ground truth.", evaluation,
              ("method", "data.eval_split", "data.train_split", f"{section}.walk"),
              ("pipeline/metrics.py", "stages/eval_walk.py"), (walk,), outs=(f"{evaluation}/details.json",),
              metrics=(f"{evaluation}/metrics.json",), plots=(f"{evaluation}/per_class.csv",),
              record=f"{evaluation}/details.json"),
    )


STAGES_LIST = (
    Stage("synthetic", "Generate the built-in demo dataset (VOC layout) at synthetic.root.", "${synthetic.root}",
          ("synthetic",), ("pipeline/data/synthetic.py", "pipeline/data/synthetic_drawing.py", "stages/synthetic.py"),
          outs=("${synthetic.root}",), distributed=False),
    Stage("data", "Validate the dataset at data.root and index its splits and image-level labels.", _dir("data", None),
          ("data", "train_seg.split"), ("pipeline/data/voc.py", "pipeline/report/cooccurrence.py", "stages/data.py"),
          ("${data.root}",), outs=(_dir("data", None),), distributed=False),
    _trained("train_cls", "Train the classifier of the selected CAM method.",
             ("seed", "method", "backbone", "train_cls", "methods.${method}", "data.root", "synthetic.root",
              "data.train_split"),
             ("pipeline/data", "pipeline/cam/methods", "pipeline/cam/maps.py", *TRAINING, "stages/train_cls.py"), (_dir("data", None),),
             arguments=METHOD_OPTIONS, renamed=(("num_epochs", "train_cls.epochs"),)),
    Stage("recam", "ReCAM: fine-tune the classifier with a softmax CE on class-masked features (recam.enabled).",
          _dir("recam"), ("seed", "method", "backbone.pretrained", "recam", "train_cls", "data.train_split"),
          ("pipeline/cam/recam.py", "pipeline/cam/methods", "pipeline/cam/maps.py", *TRAINING, "stages/recam.py",
           "stages/recam_training.py"),
          (f"{_dir('train_cls')}/model.pt", _dir("data", None)), outs=(_dir("recam"),),
          record=f"{_dir('recam')}/details.json", arguments=METHOD_OPTIONS),
    _per_image("cam", "Multi-scale + flip CAMs of every train image, one .npz per image.",
               ("method", "cam", "recam.enabled", "data.train_split"),
               ("pipeline/cam", "pipeline/engine/streaming.py", "pipeline/models", "stages/cam.py"),
               (f"{_dir('train_cls')}/model.pt", _dir("recam")), gpu=True, arguments=METHOD_OPTIONS),
    _evaluation("eval_cam", "CAM mIoU on train with the background threshold swept.", CAM_DIR,
                ("eval_cam", "cam.scales", "cam.flip"), ("pipeline/metrics.py", "stages/eval_cam.py"),
                extra_plots=(f"{_dir('eval_cam')}/curve.csv",)),
    # propagation: each registered method's labels -> training -> walk -> evaluation
    *(stage for name in PROPAGATION for stage in _propagation(name)),
    _per_image("crf", "Dense-CRF pseudo masks (palette PNGs) from the CAMs or the random walk.",
               ("method", "crf", "data.train_split"),
               ("pipeline/pseudo_masks/crf.py", "stages/crf.py", "stages/propagation.py"), (CAM_DIR, WALKS, EVAL_CAM),
               arguments="crf."),
    _evaluation("eval_pseudo", "Pseudo-mask mIoU on train against ground truth.", _dir("crf"),
                ("crf.source", "crf.use_crf"),
                ("pipeline/metrics.py", "stages/eval_pseudo.py")),
    _trained("train_seg", "Train DeepLab on the pseudo masks (or on ground truth: train_seg.labels=gt).",
             ("seed", "method", "backbone", "data", "synthetic.root", "train_seg"),
             ("pipeline/models", "pipeline/segmentation/deeplab.py", "pipeline/segmentation/training.py",
              "pipeline/segmentation/inference.py", "pipeline/engine", "pipeline/data", "stages/train_seg.py"),
             (_dir("crf"),), tag=SEG, per_step=True, history=False, arguments="train_seg.", renamed=DEEPLAB_STRIDE),
    _model_evaluation("eval_seg", "Val mIoU of the segmentation model; predictions as palette PNGs.",
                      f"{_dir('train_seg', SEG)}/model.pt",
                      ("method", "eval_seg", "train_seg.labels", "data.val_split", *CRF_KERNELS),
                      ("pipeline/segmentation/inference.py", "stages/eval_seg.py"), SEG, arguments="eval_seg.",
                      renamed=KERNELS_FROM_CRF),
    # the single-stage branch: segmentation trained end to end from scribbles (or image labels), no CAMs
    Stage("scribbles", "Scribble labels of the train split: ScribbleSup PNGs read, or generated from GT.",
          _dir("scribbles", None), ("scribbles", "data.root", "data.train_split"),
          ("pipeline/segmentation/scribbles.py", "stages/scribbles.py"),
          (_dir("data", None),), outs=(_dir("scribbles", None),), record=f"{_dir('scribbles', None)}/stats.json",
          distributed=False),
    _trained("train_single", "Train the single-stage model (pCE + dense-CRF / DFR loss) end to end.",
             ("seed", "backbone", "data", "synthetic.root", "single"),
             ("pipeline/segmentation", "pipeline/models", "pipeline/engine", "pipeline/data", "stages/train_single.py",
              "stages/train_seg.py"), (_dir("scribbles", None),), tag=SINGLE, per_step=True,
             history=False, arguments="single.", renamed=DEEPLAB_STRIDE),
    _model_evaluation("eval_single", "Val mIoU of the single-stage model (eval-seg's evaluation).",
                      f"{_dir('train_single', SINGLE)}/model.pt",
                      ("eval_single", "single.supervision", "single.loss", "data.val_split", *CRF_KERNELS),
                      ("pipeline/segmentation/inference.py", "stages/eval_seg.py", "stages/eval_single.py"), SINGLE,
                      arguments="eval_single.", renamed=KERNELS_FROM_CRF),
    Stage("overlays", "Side-by-side inspection images: image, CAM, pseudo mask, GT, prediction.", _dir("overlays"),
          ("method", "overlays", "crf.source", "data.train_split", "single.supervision", "single.loss"),
          ("pipeline/report/overlay.py", "stages/overlays.py"),
          (CAM_DIR, WALKS, _dir("crf"), f"{_dir('train_seg', SEG)}/model.pt",
           f"{_dir('train_single', SINGLE)}/model.pt"), plots=(_dir("overlays"),),
          distributed=False),
    Stage("inspect", "HTML report of every intermediate artifact, image by image (outputs/inspect/<method>/"
          "index.html).", _dir("inspect"),
          ("method", "inspect", "crf.source", "train_seg.labels", "single.supervision", "single.loss", "data.root",
           "data.train_split", "data.val_split"),
          ("pipeline/report", "stages/inspect.py"),
          (_dir("data", None), CAM_DIR, EVAL_CAM, WALKS, _dir("crf"),
           f"{_dir('eval_seg', SEG)}/pred", _dir("scribbles", None), f"{_dir('eval_single', SINGLE)}/pred"),
          outs=(_dir("inspect"),)),
    Stage("compare", "Table of CAM mIoU of every method evaluated so far (outputs/compare/).", _dir("compare", None),
          distributed=False, dvc=False),
)
STAGES = {stage.name: stage for stage in STAGES_LIST}

# the stages modules (and CLI commands) that compute nothing with torch: their process, its pool workers
# included, never imports torch, which takes seconds in each of the ~23 processes of a `dvc repro` (issue 19;
# tests/test_imports.py checks it)
TORCH_FREE = ("synthetic", "data", "eval_cam", "prop_labels", "eval_walk", "crf", "eval_pseudo", "scribbles",
              "inspect", "summary", "compare", "recam")  # recam: while recam.enabled is false (its training is
                                                          # stages/recam_training.py)

_VARIABLE = re.compile(r"\$\{([a-z_.]+)\}")


def variables(template: str) -> set[str]:
    """The params keys a path template names (``${paths.outputs}/cam/${method}``: paths.outputs, method)."""
    return set(_VARIABLE.findall(template))


def substitute(template: str, params, overrides: dict[str, str] | None = None) -> str:
    """``template`` with every ``${key}`` replaced by the value of ``key`` in ``params`` (or ``overrides``)."""
    dump = params.model_dump(mode="json")

    def value(match: re.Match) -> str:
        key = match.group(1)
        if overrides and key in overrides:
            return str(overrides[key])
        node = dump
        for part in key.split("."):
            node = node[part]
        return str(node)

    return _VARIABLE.sub(value, template)


def resolve(template: str, params, overrides: dict[str, str] | None = None) -> Path:
    """The path ``template`` names for this run (:func:`substitute`)."""
    return Path(substitute(template, params, overrides))


def output_dir(params, stage: str, overrides: dict[str, str] | None = None) -> Path:
    """Where ``stage`` writes for this run (``overrides``: the same stage under other params values)."""
    return resolve(STAGES[stage].directory, params, overrides)


def argument_key(stage: str, argument: str, params) -> str:
    """The params key that ``stage`` passed as the library's ``argument`` (its name when unknown)."""
    spec = STAGES.get(stage)
    if spec is None:
        return argument
    key = dict(spec.renamed).get(argument, spec.arguments + argument if spec.arguments else argument)
    return substitute(key, params)
