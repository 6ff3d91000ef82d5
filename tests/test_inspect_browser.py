"""The inspection report and DVC's offline plots page in a real browser: headless Chromium opens them from
disk (file://, no server, no network), runs their scripts without errors, and renders what they must."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.report.page import filter_rows

from conftest import REPO

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless browser test: Chromium is not installed "
                                "(Debian: apt-get install -y chromium; .ci/run installs it)")


def _chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000",
               "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def dom(tmp_path: Path, url: str) -> str:
    result = _chromium(tmp_path, url, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "rror" in line)]
    assert not console, console
    return result.stdout


def row_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]*)"', page)


def no_script_errors(page: str) -> None:
    assert 'data-ready="1"' in page, "report.js did not finish rendering"
    assert not re.search(r'<html[^>]*data-errors', page), re.findall(r'id="errors"[^>]*>([^<]*)', page)


@pytest.fixture
def report(tmp_path):
    from test_inspect import _fake_cams, _fake_pseudo, _fake_walk, _params
    from pipeline.data.image_files import save_mask
    from stages import data, eval_cam, eval_pseudo, inspect, scribbles, synthetic
    from stages.common import open_split
    from stages.segmentation_models import single_tag

    params = _params(tmp_path)
    synthetic.run(params)
    data.run(params)
    dataset = _fake_cams(params)
    _fake_cams(params, method="seam", seed=1)
    bad = dataset.ids[2]
    _fake_pseudo(params, dataset, bad)
    eval_cam.run(params)
    eval_pseudo.run(params)
    _fake_walk(params, dataset)  # IRN's walk, the scribbles and the single-stage predictions as well
    scribbles.run(params)
    val, _ = open_split(params, params.data.val_split)
    for image_id in val.ids:
        save_mask(Path(params.paths.outputs) / "eval_single" / single_tag(params) / "pred" / f"{image_id}.png",
                  val.load_mask(image_id))
    inspect.run(params)
    out = Path(params.paths.outputs) / "inspect" / "cam"
    return out, json.loads((out / "data" / "index.json").read_text()), bad


def test_report_renders_one_row_per_image_and_its_views(report, tmp_path):
    out, data, bad = report
    url = (out / "index.html").as_uri()
    page = dom(tmp_path, url)
    no_script_errors(page)
    ids = [r["id"] for r in data["rows"]]
    assert row_ids(page) == ids and len(ids) == 8 and ids[0] == bad  # worst first
    assert page.count('class="thumb"') == 8 and 'loading="lazy"' in page
    assert "<svg" in page and "Per-class IoU" in page  # per-class bar chart and threshold curve
    assert "Classes that appear together" in page  # the train split's co-occurrence table

    assert row_ids(dom(tmp_path, url + "#sort=id&desc=1")) == sorted(ids, reverse=True)
    worse = [r["id"] for r in filter_rows(data["rows"], worse=True)]  # the IRN walk's holes make some worse
    assert row_ids(dom(tmp_path, url + "#worse=1")) == worse and bad in worse
    cls = data["rows"][0]["classes"][0]
    expected = [r["id"] for r in data["rows"] if cls in r["classes"]]
    assert row_ids(dom(tmp_path, url + f"#cls={cls}")) == expected
    assert row_ids(dom(tmp_path, url + "#split=val&sort=id")) == sorted(r["id"] for r in data["rows"] if r["split"] == "val")

    detail = dom(tmp_path, url + f"#id={bad}")
    no_script_errors(detail)
    assert f'data-detail="{bad}"' in detail
    assert 'id="threshold"' in detail and 'id="changed-view"' in detail
    assert re.findall(r'data-method="([^"]*)"', detail) == ["cam", "seam"]
    assert "gained correct" in detail and "ground truth" in detail
    assert "IRN walk (" in detail and 'class="stack scribbles"' in detail and "unlabelled" in detail
    val_id = next(r["id"] for r in data["rows"] if r["split"] == "val")
    val_detail = dom(tmp_path, url + f"#id={val_id}")
    no_script_errors(val_detail)
    sheet = val_detail[val_detail.index('id="detail-sheet"'):]
    assert "single-stage prediction (100.0)" in sheet and "IRN walk" not in sheet and "scribbles" not in sheet
    missing = dom(tmp_path, url + "#id=nope")
    no_script_errors(missing)
    assert "No image nope in this report." in missing


def test_report_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image

    out, data, bad = report
    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path, (out / "index.html").as_uri() + f"#id={bad}", f"--screenshot={shot}",
                       "--window-size=1200,900", "--hide-scrollbars")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100


def test_empty_report_says_so(tmp_path):
    from pipeline.report.page import write_page

    write_page(tmp_path / "empty", {"title": "empty", "method": "cam", "classes": ["background"],
                                    "palette": [[0, 0, 0], [224, 224, 192]], "stages": [], "gains": [],
                                    "notes": ["the train and val splits hold no images: nothing to show"],
                                    "splits": {}, "curve": None, "cam_threshold": None, "methods": [],
                                    "page_size": 10, "rows": []})
    page = dom(tmp_path, (tmp_path / "empty" / "index.html").as_uri())
    no_script_errors(page)
    assert row_ids(page) == [] and "nothing to inspect" in page and "hold no images" in page


def test_dvc_plots_render_offline_with_the_shipped_template(tmp_path):
    from conftest import run_dvc

    template = REPO / ".dvc" / "offline_plots.html"
    assert "cdn." not in template.read_text()
    assert "html_template = offline_plots.html" in (REPO / ".dvc" / "config").read_text()  # the default
    project = tmp_path / "plots"
    project.mkdir()
    run_dvc(project, "init", "--no-scm", "-q")
    (project / "history.csv").write_text("epoch,loss,cls\n0,1.0,0.9\n1,0.5,0.4\n2,0.3,0.2\n")
    run_dvc(project, "plots", "show", "history.csv", "-x", "epoch", "-y", "loss", "--html-template", str(template),
            "-o", "out")
    html = (project / "out" / "index.html").read_text()
    assert "<script src=" not in html and "cdn.jsdelivr" not in html  # nothing loaded from a CDN
    page = dom(tmp_path, (project / "out" / "index.html").as_uri())
    assert "vega-embed" in page and re.search(r'<(canvas|svg)[^>]*class="marks"', page), page[-2000:]
