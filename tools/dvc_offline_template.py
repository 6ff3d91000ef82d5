"""Build .dvc/offline_plots.html: DVC's plots page template with vega, vega-lite and vega-embed inlined, so
that `dvc plots show` renders from disk with no internet (DVC's own page loads them from a CDN).

    mkdir /tmp/vega && cd /tmp/vega && npm install vega@5 vega-lite@5 vega-embed@6
    python tools/dvc_offline_template.py /tmp/vega/node_modules

.dvc/config names it (`plots.html_template`), so `dvc plots show` uses it without options. Vega, Vega-Lite
and vega-embed are BSD-3-Clause (their licence texts are inlined with them).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

PACKAGES = [("vega", "build/vega.min.js"), ("vega-lite", "build/vega-lite.min.js"),
            ("vega-embed", "build/vega-embed.min.js")]
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>DVC plots</title>
<!-- {versions}: inlined (no CDN), so the page renders offline. -->
{scripts}
<style>table {{ border-spacing: 15px; }} body {{ font-family: system-ui, sans-serif; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def build(node_modules: Path, target: Path) -> None:
    scripts, versions = [], []
    for name, dist in PACKAGES:
        package = json.loads((node_modules / name / "package.json").read_text())
        code = (node_modules / name / dist).read_text()
        if "{plot_divs}" in code or "{refresh_tag}" in code or "</script" in code.lower():
            raise SystemExit(f"{name}: its code holds a DVC placeholder or </script>; cannot inline it")
        code = code.replace("//# sourceMappingURL=", "// sourceMappingURL (not shipped): ")
        licence_file = node_modules / name / "LICENSE"
        licence = (licence_file.read_text().strip() if licence_file.is_file() else
                   f"Licence: {package['license']} (the npm package ships no LICENSE file; see {package.get('homepage', name)})")
        versions.append(f"{name} {package['version']} ({package['license']})")
        scripts.append(f"<script>/* {name} {package['version']}\n{licence}\n*/\n{code}\n</script>")
    target.write_text(TEMPLATE.format(versions=", ".join(versions), scripts="\n".join(scripts)))
    print(f"wrote {target}: {', '.join(versions)}")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html")
