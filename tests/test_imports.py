"""The stages that compute nothing with torch never import it (issue 19: each stage is one process, and
torch + torchvision take seconds to import): their module, params validation, the CLI and their pool
workers. The lazy registries that make this possible list what the loaded classes say."""
from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import typing
from collections.abc import Sequence

import pytest

from conftest import REPO
from stages.table import STAGES, TORCH_FREE

# per torch-free stage, in a fresh interpreter: its module, params.yaml validated the way every stage's is
# (every CAM method's options and every propagation section included), the CLI and the command's --help
_PROBE = """
import sys
import stages.{module}
from stages.cli import app
from stages.config import load_params

load_params("params.yaml", ["method=seam"])
try:
    app(["{command}", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = sorted(name for name in ("torch", "torchvision") if name in sys.modules)
assert not heavy, heavy
"""


def _command(module: str) -> str:
    stage = next((stage for stage in STAGES.values() if stage.module == module), None)
    return stage.command.split()[0] if stage else module.replace("_", "-")


@pytest.mark.parametrize("module", TORCH_FREE)
def test_a_torch_free_stage_imports_no_torch(module):
    probe = _PROBE.format(module=module, command=_command(module))
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("module", ["cam", "walk", "eval_seg", "eval_single", "overlays"])
def test_a_stage_that_trains_nothing_imports_no_torchvision_or_dvclive(module):
    """torchvision (it loads torch._dynamo) and dvclive cost about two seconds per process; only the
    training stages build augmentations or write training curves."""
    probe = f"import sys, stages.{module}; heavy = [m for m in ('torchvision', 'dvclive') if m in sys.modules]; " \
            "assert not heavy, heavy"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_pool_workers_of_a_torch_free_stage_import_no_torch():
    """A per-image stage's workers (:func:`pipeline.engine.processes.process_map`) set torch's thread count
    only where torch is already loaded."""
    probe = textwrap.dedent("""
        import sys
        from pipeline.engine.processes import process_map

        def loaded(_):
            return "torch" in sys.modules

        if __name__ == "__main__":
            assert list(process_map(loaded, range(4), workers=2)) == [False] * 4
            assert "torch" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_cam_method_options_read_from_source_equal_the_loaded_constructors():
    """Params validation reads each method's constructor from its source (no torch); it must say what the
    imported class says: the same parameters, defaults and option annotations."""
    from pipeline.cam.methods import METHODS
    from pipeline.models.lazy_registry import _static_init_signature

    built = ("backbone", "num_classes")
    for name in METHODS:
        static = _static_init_signature(METHODS.target(name), built)
        assert static is not None, f"{name}: constructor not readable from source; params validation imports torch"
        signature, hints = static
        init = METHODS[name].__init__
        loaded = inspect.signature(init)
        assert [(p.name, p.default) for p in signature.parameters.values()] == \
            [(p.name, p.default) for p in loaded.parameters.values()], name
        expected = {k: v for k, v in typing.get_type_hints(init).items() if k not in ("self", "return", *built)}
        assert hints == expected, name


def test_a_constructor_the_source_does_not_state_plainly_is_read_from_the_class(tmp_path, monkeypatch):
    from pipeline.models.lazy_registry import init_signature

    (tmp_path / "plain_or_not.py").write_text(textwrap.dedent("""
        from collections.abc import Sequence
        SCALE = 2.0

        class Plain:
            def __init__(self, backbone: "Unknown", stages: Sequence[int] = (-3, -2), mode: str = "a"):
                pass

        class Computed:
            def __init__(self, scale: float = SCALE * 2):
                pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    signature, hints = init_signature("plain_or_not:Plain", unread=("backbone",))
    assert "plain_or_not" not in sys.modules  # read from the source
    assert signature.parameters["stages"].default == (-3, -2) and hints == {"stages": Sequence[int], "mode": str}
    signature, hints = init_signature("plain_or_not:Computed")
    assert "plain_or_not" in sys.modules and signature.parameters["scale"].default == 4.0 and hints == {"scale": float}


def test_backbone_registry_entries_are_backbones_with_their_strides():
    from pipeline.models.backbones import OUTPUT_STRIDES, REGISTRY
    from pipeline.models.backbones import resnet
    from pipeline.models.backbones.base import Backbone
    from pipeline.models.lazy_registry import resolve

    for name, entry in REGISTRY.items():
        assert issubclass(resolve(entry.cls), Backbone), name
    assert set(resnet._DILATION) == set(OUTPUT_STRIDES["resnet50"]) == set(OUTPUT_STRIDES["resnet101"])


def test_a_propagation_methods_torch_modules_are_all_its_network_and_walk_import():
    """The walk stage imports :attr:`~pipeline.propagation.base.PropagationMethod.torch_modules` and the
    backbones before its workers fork: building the network and walking must import nothing else of the
    package."""
    probe = textwrap.dedent("""
        import sys
        import numpy as np
        from pipeline.models.backbones import import_backbones
        from pipeline.propagation import get_propagation, list_propagation
        from pipeline.propagation.base import StageContext
        from stages.config import load_params

        params = load_params("params.yaml", ["backbone.name=tiny", "backbone.pretrained=none"])
        context = StageContext(cam_threshold=lambda: 0.3, crf_kernels={}, backbone=params.backbone)
        image = np.zeros((48, 48, 3), np.uint8)
        cams = np.zeros((1, 48, 48), np.float32)
        cams[0, 8:30, 10:34] = 0.9
        for name in list_propagation():
            method = get_propagation(name)
            assert method.torch_modules, name
            method.import_torch_steps()
            import_backbones()
            before = set(sys.modules)
            network = method.build_network(method.network_spec(params.propagation[name], context), None).eval()
            settings, _ = method.walk_settings(params.propagation[name], context)
            method.walk(network, image, cams, np.array([3]), "cpu", **settings)
            late = sorted(m for m in set(sys.modules) - before if m.startswith("pipeline"))
            assert not late, (name, late)
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_disabled_recam_stage_runs_without_torch(tmp_path):
    """With ``recam.enabled: false`` (the default) the stage only records that; its training module stays out."""
    probe = textwrap.dedent(f"""
        import sys
        from stages import recam
        from stages.config import load_params

        assert recam.run(load_params("params.yaml", ["paths.outputs={tmp_path}"])) == {{"enabled": False}}
        assert "torch" not in sys.modules and "stages.recam_training" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "recam" / "cam" / "metrics.json").read_text().strip().startswith("{")
