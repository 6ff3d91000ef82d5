"""The one training loop (pipeline/engine/trainer.py): a non-finite loss stops before the optimiser step
with one line naming the stage, step, epoch and term, and the previous checkpoint stays; the per-epoch
hooks give epoch means and PPL's per-stage schedule."""
import pytest
import torch

from pipeline.engine.hooks import EpochMeans, epoch_schedule
from pipeline.engine.trainer import Hook, poly_factor, train
from pipeline.errors import ConfigError, WsssError


def _model():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model.param_groups = lambda lr, mult: [{"params": list(model.parameters()), "lr": lr}]
    return model


def _data(batches: int = 2):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, generator=generator), torch.randn(4, 2, generator=generator)) for _ in range(batches)]


def _step_nan_at(bad_step: int):
    def step_fn(net, x, y, step):
        pce = ((net(x) - y) ** 2).mean()
        crf = pce * 0 + (float("nan") if step == bad_step else 0.5)
        return {"pce": pce, "crf": crf, "loss": pce + crf}
    return step_fn


class _Snapshot(Hook):
    """The weights and the resume file as they were after each step."""

    def __init__(self, model, path):
        self.model, self.path, self.weights, self.files = model, path, {}, {}

    def after_step(self, step, values):
        self.weights[step] = [p.detach().clone() for p in self.model.parameters()]
        self.files[step] = self.path.read_bytes() if self.path.is_file() else None


def test_non_finite_loss_stops_before_the_optimiser_step_and_keeps_the_checkpoint(tmp_path):
    model = _model()
    path = tmp_path / "resume.pt"
    snapshot = _Snapshot(model, path)
    message = (r"^train_single: the loss became nan in term 'crf' at step 5 \(epoch 2\); lower single.lr or check "
               r"the inputs$")
    with pytest.raises(ConfigError, match=message) as raised:
        train(model, _step_nan_at(5), _data(), 8, 0.1, name="train_single", lr_param="single.lr", amp=False,
              hooks=[snapshot], resume_path=path, resume_every=2, resume_key="k")
    assert isinstance(raised.value, WsssError)  # the CLI's one-line error, exit 2
    assert "\n" not in str(raised.value)
    for before, now in zip(snapshot.weights[4], model.parameters()):
        assert torch.equal(before, now)  # step 5's optimiser step did not run
    assert path.read_bytes() == snapshot.files[4]  # the checkpoint of step 4 is intact
    assert torch.load(path, weights_only=False)["step"] == 4


def test_a_finite_run_is_not_stopped_and_records_every_term():
    records = train(_model(), _step_nan_at(-1), _data(), 4, 0.1, name="t", lr_param="t.lr", amp=False)
    assert [sorted(r) for r in records] == [["crf", "loss", "lr", "pce"]] * 4
    assert records[0]["lr"] == pytest.approx(0.1) and records[-1]["lr"] == pytest.approx(0.1 * poly_factor(3, 4))


def test_epoch_means_are_the_means_of_each_epochs_steps():
    means = EpochMeans(per_epoch=2)
    records = train(_model(), _step_nan_at(-1), _data(2), 6, 0.1, name="t", lr_param="t.lr", amp=False,
                    hooks=[means])
    assert [h["epoch"] for h in means.history] == [0, 1, 2]
    for epoch, row in enumerate(means.history):
        steps = records[2 * epoch:2 * epoch + 2]
        assert row["pce"] == pytest.approx(sum(r["pce"] for r in steps) / 2)
        assert "lr" not in row


def test_staged_methods_restart_the_poly_schedule_with_each_stage():
    class Staged(torch.nn.Module):
        def stage_span(self, epoch, epochs):
            return range(0, 2) if epoch < 2 else range(2, 4)

    staged = epoch_schedule(Staged(), epochs=4, per_epoch=3)
    assert staged(0) == staged(6) == 1.0  # each stage starts at the full lr
    assert staged(5) == pytest.approx(poly_factor(5, 6)) and staged(11) == pytest.approx(poly_factor(5, 6))
    plain = epoch_schedule(torch.nn.Module(), epochs=4, per_epoch=3)
    assert plain(6) == pytest.approx(poly_factor(6, 12))
