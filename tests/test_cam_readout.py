import torch

from pipeline.cam import multiscale_cam, normalize_cams
from pipeline.methods.base import CamMethod
from pipeline.models.backbones.tiny import TinyBackbone


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
