import pytest
import torch

from pipeline.cam.maps import normalize_cams
from pipeline.cam.maps import minmax_normalise
from pipeline.cam.methods import METHODS
from pipeline.cam.methods.base import CamMethod
from pipeline.cam.readout import multiscale_cam
from pipeline.errors import ConfigError
from pipeline.models.backbones.tiny import TinyBackbone
from stages.config import load_params


class ColumnCAM(CamMethod):
    """A fake method whose class-0 CAM is the image's red channel pooled to stride 4, class 1 its negative."""

    name = "column"

    def cam(self, images):
        red = torch.nn.functional.avg_pool2d(images[:, :1], 4)
        return torch.cat([red, -red, 2 * red], dim=1)


def test_normalize_cams_maps_each_class_max_to_one():
    cams = torch.tensor([[[1.0, 2.0], [-1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalize_cams(cams)
    assert torch.allclose(out[0].max(), torch.tensor(1.0), atol=1e-4)
    assert out[0].min() == 0  # ReLU
    assert torch.all(out[1] == 0)  # an all-zero map stays zero


def test_multiscale_cam_shape_range_and_class_selection():
    method = ColumnCAM(TinyBackbone(), num_classes=3).eval()
    image = torch.zeros(3, 40, 56)
    image[0, :, 28:] = 1.0  # right half red
    cams = multiscale_cam(method, image, [0, 2], scales=(1.0, 0.5), flip=True)
    assert cams.shape == (2, 40, 56)
    assert float(cams.min()) >= 0 and abs(float(cams.max()) - 1) < 1e-3
    # flip fusion makes the CAM symmetric only if the input is; here the right half dominates
    assert cams[0, :, 40:].mean() > 0.5 > cams[0, :, :16].mean()
    # class 2 is class 0 scaled: the same after max-normalisation
    assert torch.allclose(cams[0], cams[1], atol=1e-4)
    assert multiscale_cam(method, image, [], scales=(1.0,)).shape == (0, 40, 56)


class FloorCAM(CamMethod):
    """A fake refined CAM: a floor of 0.5 everywhere (like a PCM average) plus 1.0 on the right half."""

    name = "floor"

    def cam(self, images):
        right = (torch.arange(images.shape[-1]) >= images.shape[-1] // 2).to(images.dtype)
        return (0.5 + right).expand(images.shape[0], 1, images.shape[-2], images.shape[-1]).clone()


def test_minmax_readout_removes_the_floor_that_max_keeps():
    image = torch.zeros(3, 8, 8)
    method = FloorCAM(TinyBackbone(), num_classes=1).eval()
    by_max = multiscale_cam(method, image, [0], scales=(1.0,), flip=False, normalize="max")
    by_minmax = multiscale_cam(method, image, [0], scales=(1.0,), flip=False, normalize="minmax")
    # max: the floor stays at 0.5 / 1.5 = 1/3 -> above a threshold of 0.3 the whole image is foreground
    torch.testing.assert_close(by_max[0, :, 0], torch.full((8,), 1 / 3), atol=1e-4, rtol=0)
    # min-max: floor 0, peak 1
    torch.testing.assert_close(by_minmax[0, :, 0], torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(by_minmax[0, :, -1], torch.ones(8), atol=1e-4, rtol=0)
    # only the known answer: (x - min - eps) / (max - min + eps)
    torch.testing.assert_close(minmax_normalise(torch.tensor([[[1.0, 2.0, 3.0]]])),
                               torch.tensor([[[0.0, 0.5, 1.0]]]), atol=1e-4, rtol=0)


def test_readout_defaults_to_the_methods_own_normalisation():
    image = torch.zeros(3, 8, 8)
    method = FloorCAM(TinyBackbone(), num_classes=1).eval()
    assert method.readout_norm == "max"
    default = multiscale_cam(method, image, [0], scales=(1.0,), flip=False)
    torch.testing.assert_close(default, multiscale_cam(method, image, [0], (1.0,), False, "max"))
    method.readout_norm = "minmax"
    default = multiscale_cam(method, image, [0], scales=(1.0,), flip=False)
    torch.testing.assert_close(default, multiscale_cam(method, image, [0], (1.0,), False, "minmax"))
    with pytest.raises(ConfigError, match="cam.normalize"):
        multiscale_cam(method, image, [0], (1.0,), False, "mean")


def test_method_readouts_and_the_cam_normalize_param(tmp_path):
    assert METHODS["cam"].readout_norm == "max" and METHODS["ppl"].readout_norm == "max"
    assert METHODS["seam"].readout_norm == "minmax" and METHODS["cpn"].readout_norm == "minmax"
    path = tmp_path / "p.yaml"
    path.write_text("cam:\n  normalize: auto\n")
    params = load_params(path)
    assert params.cam.norm_for("minmax") == "minmax" and params.cam.norm_for("max") == "max"
    assert load_params(path, ["cam.normalize=max"]).cam.norm_for("minmax") == "max"
    with pytest.raises(ConfigError, match="cam.normalize"):
        load_params(path, ["cam.normalize=mean"])
