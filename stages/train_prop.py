"""Stage ``train_prop <method>``: a propagation method's network trained on the labels of ``prop_labels``.

AffinityNet (PSA) fine-tunes the backbone with its affinity head; IRN trains its class-boundary branch on
the frozen backbone (departures: pipeline/propagation/irn/params.py and network.py). Writes
``<outputs>/train_prop/<method>/<CAM method>/``: ``model.pt`` (weights + the spec that rebuilds them),
``metrics.json`` (final loss terms, wall time) and ``history.csv``. Resumable and torchrun-ready as
``train_cls`` (``propagation.<method>.train.resume_every``).
"""
from __future__ import annotations

from stages.common import require
from stages.config import Params
from stages.label_map_training import train_on_label_maps
from stages.propagation import command, context, method_and_section, prop_dir


def run(params: Params, name: str) -> dict:
    method, cfg = method_and_section(params, name)
    label_dir = require(prop_dir(params, "prop_labels", name), f"run `{command('prop_labels', name)}` first")
    spec = method.network_spec(cfg, context(params, "train"))
    return train_on_label_maps(params, f"train_prop/{name}", cfg.train, label_dir, spec, method.build_network,
                               section=f"propagation.{name}.train")
