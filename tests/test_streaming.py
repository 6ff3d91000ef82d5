"""The CAM stage's decode-ahead loader and write-behind pool: same order and bytes as inline work, and a
failed write surfaces in the producer."""
import threading
import time

import numpy as np
import pytest
import torch

from conftest import REPO
from pipeline.engine.atomic import OWNER_MARKER
from pipeline.engine.streaming import BackgroundWriter, stream_images


def _load(image_id: str) -> np.ndarray:
    value = int(image_id)
    return np.full((4 + value, 5, 3), value, dtype=np.uint8)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_images_keeps_the_order_and_decodes_every_image(workers):
    ids = [str(i) for i in range(7)]
    got = list(stream_images(_load, ids, workers, torch.device("cpu")))
    assert [image_id for image_id, _ in got] == ids
    for image_id, image in got:
        assert image.shape == (3, 4 + int(image_id), 5) and image.dtype == torch.float32
        assert torch.allclose(image, torch.full_like(image, int(image_id) / 255))


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_is_the_loaders_one_line_error(workers):
    from pipeline.errors import DataError

    def load(image_id):
        if image_id == "3":
            raise DataError("JPEGImages/3.jpg: cannot decode image")
        return _load(image_id)

    with pytest.raises(DataError) as caught:
        list(stream_images(load, [str(i) for i in range(5)], workers, torch.device("cpu")))
    assert str(caught.value) == "JPEGImages/3.jpg: cannot decode image"


def test_background_writer_runs_every_write_and_bounds_the_pending_ones():
    done, lock, peak = [], threading.Lock(), [0]

    def write(i):
        time.sleep(0.01)
        with lock:
            done.append(i)

    with BackgroundWriter(2) as writer:
        for i in range(10):
            writer.submit(write, i)
            peak[0] = max(peak[0], len(writer.pending))
    assert sorted(done) == list(range(10))
    assert peak[0] <= 4


def test_background_writer_raises_a_failed_write_in_the_producer():
    def fail(i):
        if i == 1:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(1) as writer:
            for i in range(6):
                writer.submit(fail, i)


def test_cam_stage_writes_the_same_bytes_with_and_without_the_loader_and_writers(tmp_path):
    from stages import cam, data, synthetic, train_cls
    from stages.config import load_params

    def params(outputs, *extra):
        return load_params(REPO / "params.yaml", [
            f"paths.outputs={tmp_path / outputs}", f"synthetic.root={tmp_path / 'syn'}",
            f"data.root={tmp_path / 'syn'}", "synthetic.num_train=6", "synthetic.num_val=2",
            "synthetic.image_size=48", "backbone.name=tiny", "backbone.pretrained=none",
            "backbone.output_stride=8", "train_cls.epochs=1", "train_cls.batch_size=3", "train_cls.crop_size=48",
            "cam.scales=[1.0,0.5]", "workers=1", *extra])

    inline = params("a", "cam.loader_workers=0", "cam.writers=0")
    synthetic.run(inline)
    data.run(inline)
    train_cls.run(inline)
    cam.run(inline)
    streamed = params("a", "cam.loader_workers=2", "cam.writers=2", "paths.outputs=" + str(tmp_path / "b"))
    data.run(streamed)
    (tmp_path / "b" / "train_cls").mkdir(parents=True)
    (tmp_path / "a" / "train_cls" / "cam").rename(tmp_path / "b" / "train_cls" / "cam")
    cam.run(streamed)
    reference = sorted(p for p in (tmp_path / "a" / "cam" / "cam").iterdir() if p.name != OWNER_MARKER)
    assert len(reference) == 6
    for path in reference:
        assert (tmp_path / "b" / "cam" / "cam" / path.name).read_bytes() == path.read_bytes(), path.name
