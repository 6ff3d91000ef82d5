// wsss-pipe inspection report. Runs from disk: data comes in through <script> tags (data/index.js calls
// inspectIndex, data/img/<id>.js calls inspectImage), arrays are zlib-compressed uint8 in base64, decoded
// with DecompressionStream and drawn on canvases. State lives in the URL hash (#sort=..&desc=1&cls=3&worse=1
// &split=train&id=...), so a view can be bookmarked and the browser test can open a given view.
"use strict";

var R = { data: null, shown: 0, rows: [], image: null };
var STAGE_COLOURS = { cam: "#e6a100", pseudo: "#3d5a80", pred: "#9b2226", single: "#7b2cbf" };
// The walks (R.data.walks: the registered propagation methods, written by stages/inspect.py) take these in turn.
var WALK_COLOURS = ["#2a9d8f", "#80b918", "#f4a261", "#8d99ae", "#e76f51", "#43aa8b"];
function walks() { return (R.data && R.data.walks) || []; }
function stageColour(key) {
  var i = walks().indexOf(key);
  return i >= 0 ? WALK_COLOURS[i % WALK_COLOURS.length] : STAGE_COLOURS[key] || "#888888";
}
// The label maps of the image view, in pipeline order (scribbles and ground truth are not scored).
function maskPanels() {
  var names = R.data.stage_names || {};
  return walks().map(function (k) { return [k, names[k] || k]; }).concat([["pseudo", "pseudo mask"],
    ["scribbles", "scribbles"], ["gt", "ground truth"], ["pred", "prediction"], ["single", "single-stage prediction"]]);
}

// ------------------------------------------------------------------ helpers
function el(tag, attrs, children) {
  var node = document.createElement(tag);
  Object.keys(attrs || {}).forEach(function (k) {
    if (k === "text") node.textContent = attrs[k];
    else if (k === "cls") node.className = attrs[k];
    else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
    else node.setAttribute(k, attrs[k]);
  });
  (children || []).forEach(function (c) { if (c != null) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
  return node;
}
function svgEl(tag, attrs, text) {
  var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
  if (text != null) node.textContent = text;
  return node;
}
function pct(v) { return v == null ? "–" : (100 * v).toFixed(1); }
function signed(v) { return v == null ? "–" : (v >= 0 ? "+" : "") + (100 * v).toFixed(1); }
function rgb(c) { return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; }
function colour(index) { var p = R.data.palette; return index === 255 ? p[p.length - 1] : p[index] || [0, 0, 0]; }
function className(index) { return index === 255 ? "ignore" : R.data.classes[index] || String(index); }
function stageName(key) {
  var s = R.data.stages.filter(function (x) { return x.key === key; })[0];
  return s ? s.name : key;
}
function gainName(key) { var p = key.split("-"); return stageShort(p[0]) + " − " + stageShort(p[1]); }
function stageShort(key) { return { cam: "CAM", pseudo: "pseudo", pred: "pred", single: "single" }[key] || key; }

function readHash() {
  var state = { sort: "final", desc: false, cls: null, worse: false, split: null, id: null };
  location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    if (!part) return;
    var kv = part.split("="), key = decodeURIComponent(kv[0]), value = decodeURIComponent(kv[1] || "");
    if (key === "sort") state.sort = value;
    else if (key === "desc") state.desc = value === "1";
    else if (key === "cls") state.cls = value === "" ? null : Number(value);
    else if (key === "worse") state.worse = value === "1";
    else if (key === "split") state.split = value || null;
    else if (key === "id") state.id = value || null;
  });
  return state;
}
function writeHash(state) {
  var parts = ["sort=" + encodeURIComponent(state.sort)];
  if (state.desc) parts.push("desc=1");
  if (state.cls != null) parts.push("cls=" + state.cls);
  if (state.worse) parts.push("worse=1");
  if (state.split) parts.push("split=" + encodeURIComponent(state.split));
  if (state.id) parts.push("id=" + encodeURIComponent(state.id));
  var hash = "#" + parts.join("&");
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

// ------------------------------------------------------------------ sort and filter (as page.py)
function rowValue(row, key) {
  if (key === "id") return row.id;
  if (key === "final") return row.final;
  var v = key.indexOf("-") >= 0 ? row.gains[key] : row.scores[key];
  return v === undefined ? null : v;
}
function byId(a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; }
function sortRows(rows, key, desc) {
  var present = rows.filter(function (r) { return rowValue(r, key) != null; });
  var missing = rows.filter(function (r) { return rowValue(r, key) == null; }).sort(byId);
  var sign = desc ? -1 : 1;
  present.sort(function (a, b) {
    var va = rowValue(a, key), vb = rowValue(b, key);
    var c = va < vb ? -1 : va > vb ? 1 : 0;
    return sign * c || byId(a, b);
  });
  return present.concat(missing);
}
function filterRows(rows, state) {
  return rows.filter(function (r) {
    return (state.cls == null || r.classes.indexOf(state.cls) >= 0) && (!state.worse || r.worse) &&
      (!state.split || r.split === state.split);
  });
}

// ------------------------------------------------------------------ index
function inspectIndex(data) {
  R.data = data;
  var notes = document.getElementById("notes");
  data.notes.forEach(function (n) { notes.appendChild(el("li", { text: n })); });
  if (!data.rows.length) {
    document.getElementById("browser").appendChild(el("p", { cls: "empty", text: "No images: the splits are empty, so there is nothing to inspect." }));
  }
  renderSummary();
  renderCooccurrence();
  renderControls();
  renderRows();
  window.addEventListener("hashchange", function () { var s = readHash(); syncControls(s); renderRows(); openFromHash(); });
  openFromHash();
  document.body.setAttribute("data-ready", "1");
}

function renderSummary() {
  var box = document.getElementById("summary"), data = R.data;
  Object.keys(data.splits).forEach(function (split, i) {
    var summary = data.splits[split];
    var stages = data.stages.filter(function (s) { return summary.per_class[s.key]; });
    var section = el("details", i === 0 ? { open: "" } : {}, [el("summary", {}, [el("h2", { text: "Per-class IoU, " + split +
      " split (" + summary.count + " images" + stages.map(function (s) { return "; " + stageShort(s.key) + " " + pct(summary.miou[s.key]); }).join("") + ")" })])]);
    box.appendChild(section);
    if (!stages.length) { section.appendChild(el("p", { text: "No stage scored on this split." })); return; }
    var head = el("tr", {}, [el("th", { text: "class" })].concat(stages.map(function (s) { return el("th", { text: s.name }); })));
    var body = data.classes.map(function (name, c) {
      return el("tr", {}, [el("td", { text: name })].concat(stages.map(function (s) {
        return el("td", { text: pct(summary.per_class[s.key][c]) });
      })));
    });
    body.push(el("tr", { cls: "total" }, [el("td", { text: "mIoU" })].concat(stages.map(function (s) {
      return el("td", { text: pct(summary.miou[s.key]) });
    }))));
    var table = el("table", { cls: "iou" }, [el("thead", {}, [head]), el("tbody", {}, body)]);
    section.appendChild(el("div", { cls: "cards" }, [table, barChart(summary, stages), stages.some(function (s) { return s.key === "cam"; }) ? curveChart() : null]));
  });
}

// Which classes appear together in the train split (pipeline/report/cooccurrence.py), CAM IoU beside them.
function renderCooccurrence() {
  var co = R.data.cooccurrence;
  if (!co || !co.rows.length) return;
  var flagged = co.rows.filter(function (r) { return r.never_alone; }).map(function (r) { return r["class"]; });
  var section = el("details", { id: "cooccurrence" }, [el("summary", {}, [el("h2", { text: "Classes that appear together, " +
    co.split + " split" + (flagged.length ? " (never alone: " + flagged.join(", ") + ")" : "") })])]);
  var head = el("tr", {}, ["class", "images", "alone", "most often with", "share", "CAM IoU"].map(function (t) { return el("th", { text: t }); }));
  var body = co.rows.map(function (r) {
    return el("tr", r.never_alone ? { cls: "never-alone", title: "never the only labelled class of an image" } : {}, [
      el("td", { text: r["class"] + (r.never_alone ? " \u2691" : "") }), el("td", { text: String(r.images) }),
      el("td", { text: String(r.alone) }), el("td", { text: r.partner ? r.partner + " (" + r.with_partner + ")" : "–" }),
      el("td", { text: r.partner_share == null || !r.partner ? "–" : pct(r.partner_share) + "%" }), el("td", { text: pct(r.iou) })]);
  });
  section.appendChild(el("p", { text: "Image-level labels cannot separate classes that always appear together: their CAMs " +
    "may spread over each other. Counts from the image labels; CAM IoU from eval_cam's per_class.csv." }));
  section.appendChild(el("table", { cls: "iou" }, [el("thead", {}, [head]), el("tbody", {}, body)]));
  document.getElementById("summary").appendChild(section);
}

function barChart(summary, stages) {
  var classes = R.data.classes, bar = Math.max(3, Math.round(15 / stages.length)), gap = 5, left = 80, width = 260;
  var group = stages.length * bar + gap, height = classes.length * group + 40;
  var svg = svgEl("svg", { width: left + width + 20, height: height, role: "img", "aria-label": "per-class IoU" });
  classes.forEach(function (name, c) {
    var y = 20 + c * group;
    svg.appendChild(svgEl("text", { x: left - 6, y: y + stages.length * bar / 2 + 4, "text-anchor": "end" }, name));
    stages.forEach(function (s, i) {
      var v = summary.per_class[s.key][c];
      if (v == null) return;
      var rect = svgEl("rect", { x: left, y: y + i * bar, width: Math.max(1, v * width), height: bar - 1, fill: stageColour(s.key) });
      rect.appendChild(svgEl("title", {}, s.name + " " + name + ": " + pct(v)));
      svg.appendChild(rect);
    });
  });
  [0, 0.25, 0.5, 0.75, 1].forEach(function (t) {
    svg.appendChild(svgEl("line", { x1: left + t * width, x2: left + t * width, y1: 16, y2: height - 20, stroke: "#ccc" }));
    svg.appendChild(svgEl("text", { x: left + t * width, y: height - 6, "text-anchor": "middle" }, String(100 * t)));
  });
  stages.forEach(function (s, i) {
    svg.appendChild(svgEl("rect", { x: left + i * 70, y: 2, width: 10, height: 10, fill: stageColour(s.key) }));
    svg.appendChild(svgEl("text", { x: left + i * 70 + 14, y: 11 }, stageShort(s.key)));
  });
  return svg;
}

function curveChart() {
  var curve = R.data.curve;
  if (!curve || !curve.threshold.length) return el("p", { text: "No CAM threshold curve (run eval-cam)." });
  var w = 330, h = 220, l = 40, b = 30, t0 = curve.threshold[0], t1 = curve.threshold[curve.threshold.length - 1];
  var m1 = Math.max.apply(null, curve.miou), span = Math.max(t1 - t0, 1e-9);
  function x(t) { return l + (t - t0) / span * (w - l - 10); }
  function y(m) { return h - b - m / Math.max(m1, 1e-9) * (h - b - 40); }
  var svg = svgEl("svg", { width: w, height: h, role: "img", "aria-label": "CAM mIoU vs threshold" });
  svg.appendChild(svgEl("text", { x: l, y: 12 }, "CAM mIoU vs background threshold"));
  svg.appendChild(svgEl("polyline", { fill: "none", stroke: stageColour("cam"), "stroke-width": 2,
    points: curve.threshold.map(function (t, i) { return x(t) + "," + y(curve.miou[i]); }).join(" ") }));
  svg.appendChild(svgEl("line", { x1: l, x2: w - 10, y1: h - b, y2: h - b, stroke: "#666" }));
  svg.appendChild(svgEl("line", { x1: l, x2: l, y1: 16, y2: h - b, stroke: "#666" }));
  [t0, (t0 + t1) / 2, t1].forEach(function (t) { svg.appendChild(svgEl("text", { x: x(t), y: h - b + 14, "text-anchor": "middle" }, t.toFixed(2))); });
  svg.appendChild(svgEl("text", { x: l - 4, y: y(m1) + 4, "text-anchor": "end" }, pct(m1)));
  svg.appendChild(svgEl("text", { x: l - 4, y: h - b, "text-anchor": "end" }, "0"));
  if (R.data.cam_threshold != null) {
    var tx = x(R.data.cam_threshold);
    svg.appendChild(svgEl("line", { x1: tx, x2: tx, y1: 20, y2: h - b, stroke: "#900", "stroke-dasharray": "4 3" }));
    svg.appendChild(svgEl("text", { x: Math.min(tx + 3, w - 60), y: 28 }, "t = " + R.data.cam_threshold.toFixed(2)));
  }
  return svg;
}

function columns() {
  var cols = [{ key: "id", name: "image" }, { key: "split", name: "split", nosort: true }, { key: "classes", name: "classes", nosort: true }];
  R.data.stages.forEach(function (s) { cols.push({ key: s.key, name: s.name }); });
  R.data.gains.forEach(function (g) { cols.push({ key: g, name: gainName(g) }); });
  cols.push({ key: "final", name: "last stage" });
  return cols;
}

function renderControls() {
  var box = document.getElementById("controls"), state = readHash();
  var cls = el("select", { id: "filter-class", onchange: function () { update({ cls: this.value === "" ? null : Number(this.value) }); } },
    [el("option", { value: "", text: "all classes" })].concat(R.data.classes.map(function (n, i) {
      return i === 0 ? null : el("option", { value: String(i), text: n });
    })));
  var worse = el("input", { type: "checkbox", id: "filter-worse", onchange: function () { update({ worse: this.checked }); } });
  var splits = Object.keys(R.data.splits);
  var split = el("select", { id: "filter-split", onchange: function () { update({ split: this.value || null }); } },
    [el("option", { value: "", text: "all splits" })].concat(splits.map(function (s) { return el("option", { value: s, text: s }); })));
  box.appendChild(el("label", {}, ["class ", cls]));
  box.appendChild(el("label", {}, [worse, " a stage made it worse"]));
  if (splits.length > 1) box.appendChild(el("label", {}, ["split ", split]));
  box.appendChild(el("span", { id: "count" }));
  var head = document.querySelector("#rows thead");
  head.appendChild(el("tr", {}, [el("th", { text: "" })].concat(columns().map(function (c) {
    return el("th", { "data-key": c.key, title: c.nosort ? "" : "sort by " + c.name, text: c.name,
      onclick: c.nosort ? null : function () {
        var s = readHash();
        update({ sort: c.key, desc: s.sort === c.key ? !s.desc : false });
      } });
  }))));
  syncControls(state);
}

function syncControls(state) {
  document.getElementById("filter-class").value = state.cls == null ? "" : String(state.cls);
  document.getElementById("filter-worse").checked = state.worse;
  var split = document.getElementById("filter-split");
  if (split) split.value = state.split || "";
  Array.prototype.forEach.call(document.querySelectorAll("#rows th"), function (th) {
    th.classList.toggle("sorted", th.getAttribute("data-key") === state.sort);
    th.classList.toggle("desc", th.getAttribute("data-key") === state.sort && state.desc);
  });
}

function update(change) {
  var state = readHash();
  Object.keys(change).forEach(function (k) { state[k] = change[k]; });
  writeHash(state);
  if (Object.keys(change).join() === "id") return;
  syncControls(state);
  renderRows();
}

function renderRows() {
  var state = readHash();
  R.rows = sortRows(filterRows(R.data.rows, state), state.sort, state.desc);
  R.shown = 0;
  document.querySelector("#rows tbody").textContent = "";
  showMore();
}

function showMore() {
  var body = document.querySelector("#rows tbody"), cols = columns();
  var end = Math.min(R.rows.length, R.shown + R.data.page_size);
  var fragment = document.createDocumentFragment();
  for (var i = R.shown; i < end; i++) fragment.appendChild(rowElement(R.rows[i], cols));
  body.appendChild(fragment);
  R.shown = end;
  document.getElementById("count").textContent = "showing " + R.shown + " of " + R.rows.length +
    " images (" + R.data.rows.length + " in all)";
  var more = document.getElementById("more");
  more.textContent = "";
  if (R.shown < R.rows.length) {
    var button = el("button", { id: "more-button", onclick: showMore, text: "show " + Math.min(R.data.page_size, R.rows.length - R.shown) + " more" });
    more.appendChild(button);
    if ("IntersectionObserver" in window) {
      var seen = new IntersectionObserver(function (entries) {
        if (entries.some(function (e) { return e.isIntersecting; })) { seen.disconnect(); showMore(); }
      });
      seen.observe(button);
    }
  }
}

function chip(index) {
  var c = colour(index), dark = c[0] * 0.3 + c[1] * 0.59 + c[2] * 0.11 < 110;
  return el("span", { cls: "chip" + (dark ? " dark" : ""), style: "background:" + rgb(c), text: className(index) });
}

function rowElement(row, cols) {
  var tr = el("tr", { "data-id": row.id, onclick: function () { update({ id: row.id }); openFromHash(); } });
  tr.appendChild(el("td", {}, [el("img", { cls: "thumb", loading: "lazy", alt: row.id, src: "thumbs/" + encodeURIComponent(row.id) + ".jpg" })]));
  cols.forEach(function (c) {
    if (c.key === "id") tr.appendChild(el("td", { cls: "id", text: row.id }));
    else if (c.key === "split") tr.appendChild(el("td", { cls: "split", text: row.split }));
    else if (c.key === "classes") tr.appendChild(el("td", { cls: "classes" }, row.classes.map(chip)));
    else {
      var v = rowValue(row, c.key), gain = c.key.indexOf("-") >= 0;
      tr.appendChild(el("td", { cls: v == null ? "na" : gain ? (v < 0 ? "neg" : v > 0 ? "pos" : "") : "",
        text: gain ? signed(v) : pct(v) }));
    }
  });
  return tr;
}

// ------------------------------------------------------------------ image detail
function openFromHash() {
  var id = readHash().id, box = document.getElementById("detail");
  if (!id) { box.hidden = true; box.textContent = ""; return; }
  if (R.image && R.image.id === id && !box.hidden) return;
  var old = document.getElementById("image-data");
  if (old) old.remove();
  box.hidden = false;
  box.textContent = "";
  if (!R.data.rows.some(function (r) { return r.id === id; })) {
    box.appendChild(el("div", { cls: "sheet" }, [el("button", { cls: "close", onclick: closeDetail, text: "×" }),
      el("p", { id: "no-image", text: "No image " + id + " in this report." })]));
    return;
  }
  box.appendChild(el("div", { cls: "sheet" }, [el("p", { text: "loading " + id + " …" })]));
  document.body.removeAttribute("data-detail");
  var script = el("script", { id: "image-data", src: "data/img/" + encodeURIComponent(id) + ".js" });
  document.body.appendChild(script);
}

function closeDetail() { update({ id: null }); openFromHash(); }
document.addEventListener("keydown", function (e) { if (e.key === "Escape" && R.data && readHash().id) closeDetail(); });

function decode(b64) {
  var bytes = Uint8Array.from(atob(b64), function (ch) { return ch.charCodeAt(0); });
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Response(stream).arrayBuffer().then(function (buffer) { return new Uint8Array(buffer); });
}

function inspectImage(d) {
  var jobs = { masks: {}, cams: [], methods: [] };
  var pending = [];
  Object.keys(d.masks).forEach(function (k) { pending.push(decode(d.masks[k]).then(function (a) { jobs.masks[k] = a; })); });
  if (d.cam) d.cam.maps.forEach(function (m, i) { pending.push(decode(m).then(function (a) { jobs.cams[i] = a; })); });
  d.methods.forEach(function (m, j) {
    jobs.methods[j] = { maps: [], pseudo: null };
    m.maps.forEach(function (map, i) { pending.push(decode(map).then(function (a) { jobs.methods[j].maps[i] = a; })); });
    if (m.pseudo) pending.push(decode(m.pseudo).then(function (a) { jobs.methods[j].pseudo = a; }));
  });
  Promise.all(pending).then(function () {
    R.image = { id: d.id, meta: d, masks: jobs.masks, cams: jobs.cams, methods: jobs.methods };
    renderDetail();
    document.body.setAttribute("data-detail", d.id);
  }).catch(function (e) { reportError("image " + d.id + ": " + e); });
}

// Small images are shown enlarged (at least DISPLAY_MIN pixels on their longest side), maps pixelated.
var DISPLAY_MIN = 240;
function displayStyle(w, h) {
  var s = Math.max(1, DISPLAY_MIN / Math.max(w, h));
  return "width:" + Math.round(w * s) + "px;height:" + Math.round(h * s) + "px";
}
function canvas(w, h) { return el("canvas", { width: w, height: h, style: displayStyle(w, h) }); }

function labelCanvas(label, w, h) {
  var c = canvas(w, h), ctx = c.getContext("2d"), img = ctx.createImageData(w, h), px = img.data;
  for (var i = 0; i < label.length; i++) {
    var col = colour(label[i]);
    px[4 * i] = col[0]; px[4 * i + 1] = col[1]; px[4 * i + 2] = col[2]; px[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

function jet(v) {
  return [3, 2, 1].map(function (centre) { return Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * v - centre)))); });
}

function heatStack(map, w, h) {
  var c = canvas(w, h), ctx = c.getContext("2d"), img = ctx.createImageData(w, h), px = img.data;
  for (var i = 0; i < map.length; i++) {
    var col = jet(map[i] / 255);
    px[4 * i] = col[0]; px[4 * i + 1] = col[1]; px[4 * i + 2] = col[2]; px[4 * i + 3] = 140;
  }
  ctx.putImageData(img, 0, 0);
  c.className = "over";
  return el("div", { cls: "stack" }, [photo(w, h), c]);
}

function photo(w, h) {
  return el("img", { src: "images/" + encodeURIComponent(R.image.id) + ".jpg", style: displayStyle(w, h), alt: R.image.id });
}

function legendFor(labels, ignoreName) {
  var seen = {};
  labels.forEach(function (label) { for (var i = 0; i < label.length; i++) seen[label[i]] = true; });
  return el("div", { cls: "legend" }, Object.keys(seen).map(Number).sort(function (a, b) { return a - b; }).map(function (c) {
    var named = c === 255 && ignoreName;  // e.g. the scribbles' unlabelled pixels, drawn as the greyed photo
    return el("span", {}, [el("span", { cls: "sw", style: "background:" + (named ? "#bbb" : rgb(colour(c))) }), named ? ignoreName : className(c)]);
  }));
}

function scribbleStack(label, w, h) {
  // the strokes in class colours over the greyed photo; unlabelled pixels (255) are left transparent
  var c = canvas(w, h), ctx = c.getContext("2d"), img = ctx.createImageData(w, h), px = img.data;
  for (var i = 0; i < label.length; i++) {
    if (label[i] === 255) continue;
    var col = colour(label[i]);
    px[4 * i] = col[0]; px[4 * i + 1] = col[1]; px[4 * i + 2] = col[2]; px[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  c.className = "over";
  var under = photo(w, h);
  under.style.filter = "grayscale(1) opacity(0.5)";
  return el("div", { cls: "stack scribbles" }, [under, c]);
}

function panel(caption, body, legend) {
  return el("div", { cls: "panel" }, [el("div", { cls: "caption", text: caption }), body, legend || null]);
}

function camLabel(maps, keys, t) {
  // eval_cam's rule: the best class of a pixel if its score exceeds t, else background.
  var n = maps.length ? maps[0].length : R.image.meta.width * R.image.meta.height, out = new Uint8Array(n);
  var q = t * 255;
  for (var i = 0; i < n; i++) {
    var best = -1, arg = 0;
    for (var k = 0; k < maps.length; k++) if (maps[k][i] > best) { best = maps[k][i]; arg = k; }
    out[i] = maps.length && best > q ? keys[arg] : 0;
  }
  return out;
}

function miou(label, gt) {
  var classes = R.data.classes.length, inter = new Float64Array(classes), gtc = new Float64Array(classes), pc = new Float64Array(classes);
  for (var i = 0; i < gt.length; i++) {
    var g = gt[i];
    if (g === 255) continue;
    var p = label[i] === 255 ? 0 : label[i];
    gtc[g]++; pc[p]++;
    if (p === g) inter[g]++;
  }
  var sum = 0, count = 0;
  for (var c = 0; c < classes; c++) {
    var union = gtc[c] + pc[c] - inter[c];
    if (union > 0) { sum += inter[c] / union; count++; }
  }
  return count ? sum / count : null;
}

function labelMaps(t) {
  var maps = {}, img = R.image;
  if (img.meta.cam) maps.cam = camLabel(img.cams, img.meta.cam.keys, t);
  walks().concat(["pseudo", "pred", "single"]).forEach(function (k) { if (img.masks[k]) maps[k] = img.masks[k]; });
  return maps;
}

function changedCanvas(a, b, gt, w, h, counts) {
  // gained correct: wrong in A, right in B (green); lost: right in A, wrong in B (red);
  // gained wrong: wrong in both, B changed the label (orange). Unchanged and void pixels stay transparent.
  var c = canvas(w, h), ctx = c.getContext("2d"), img = ctx.createImageData(w, h), px = img.data;
  counts.gained = counts.lost = counts.wrong = 0;
  for (var i = 0; i < gt.length; i++) {
    var g = gt[i], pa = a[i] === 255 ? 0 : a[i], pb = b[i] === 255 ? 0 : b[i];
    if (g === 255 || pa === pb) continue;
    var col;
    if (pb === g) { col = [0, 200, 0]; counts.gained++; }
    else if (pa === g) { col = [230, 0, 0]; counts.lost++; }
    else { col = [255, 150, 0]; counts.wrong++; }
    px[4 * i] = col[0]; px[4 * i + 1] = col[1]; px[4 * i + 2] = col[2]; px[4 * i + 3] = 230;
  }
  ctx.putImageData(img, 0, 0);
  c.className = "over";
  return c;
}

function renderDetail() {
  var img = R.image, d = img.meta, w = d.width, h = d.height, row = R.data.rows.filter(function (r) { return r.id === d.id; })[0];
  var box = document.getElementById("detail");
  box.textContent = "";
  var sheet = el("div", { cls: "sheet", id: "detail-sheet" });
  box.appendChild(sheet);
  box.onclick = function (e) { if (e.target === box) closeDetail(); };
  sheet.appendChild(el("button", { cls: "close", onclick: closeDetail, title: "close (Esc)", text: "×" }));
  sheet.appendChild(el("h2", { text: d.id + " (" + d.split + ")" }));
  if (row) sheet.appendChild(el("p", {}, R.data.stages.map(function (s) {
    return s.key in row.scores ? el("span", { text: s.name + ": " + pct(row.scores[s.key]) + "   " }) : null;
  }).concat(Object.keys(row.gains).map(function (g) { return el("span", { cls: row.gains[g] < 0 ? "neg" : "pos", text: gainName(g) + ": " + signed(row.gains[g]) + "   " }); }))));

  // stage maps
  var panels = el("div", { cls: "panels" });
  panels.appendChild(panel("image", photo(w, h)));
  if (d.cam) d.cam.keys.forEach(function (k, i) { panels.appendChild(panel("CAM: " + className(k), heatStack(img.cams[i], w, h))); });
  maskPanels().forEach(function (p) {
    var mask = img.masks[p[0]];
    if (!mask) return;
    var caption = p[1] + (row && row.scores[p[0]] != null ? " (" + pct(row.scores[p[0]]) + ")" : "");
    if (p[0] === "scribbles") panels.appendChild(panel(caption, scribbleStack(mask, w, h), legendFor([mask], "unlabelled")));
    else panels.appendChild(panel(caption, labelCanvas(mask, w, h), legendFor([mask])));
  });
  sheet.appendChild(panels);

  // threshold slider
  if (d.cam) {
    var t0 = d.cam.threshold != null ? d.cam.threshold : 0.5;
    var slot = el("div", { id: "threshold-view" }), value = el("span", { id: "threshold-value" });
    var slider = el("input", { type: "range", id: "threshold", min: "0", max: "1", step: "0.01", value: String(t0) });
    var draw = function () {
      var t = Number(slider.value), label = camLabel(img.cams, d.cam.keys, t), s = img.masks.gt ? miou(label, img.masks.gt) : null;
      value.textContent = "t = " + t.toFixed(2) + (s == null ? "" : ", image mIoU " + pct(s) + " (at view size)");
      slot.textContent = "";
      slot.appendChild(el("div", { cls: "panels" }, [panel("CAM label map", labelCanvas(label, w, h), legendFor([label]))]));
    };
    slider.addEventListener("input", draw);
    sheet.appendChild(el("h3", { text: "Re-threshold the CAM" }));
    sheet.appendChild(el("label", {}, ["background threshold ", slider, " ", value]));
    sheet.appendChild(slot);
    draw();
  }

  // changed pixels between two stages
  var maps = labelMaps(d.cam && d.cam.threshold != null ? d.cam.threshold : 0.5), keys = Object.keys(maps);
  if (img.masks.gt && keys.length >= 2) {
    var parents = R.data.lineage;
    var first = keys[0], second = keys[1];
    for (var i = keys.length - 1; i > 0; i--) if (keys.indexOf(parents[keys[i]]) >= 0) { first = parents[keys[i]]; second = keys[i]; break; }
    var selA = el("select", { id: "changed-a" }, keys.map(function (k) { return el("option", { value: k, text: stageShort(k) }); }));
    var selB = el("select", { id: "changed-b" }, keys.map(function (k) { return el("option", { value: k, text: stageShort(k) }); }));
    selA.value = first; selB.value = second;
    var out = el("div", { id: "changed-view" });
    var redraw = function () {
      var current = labelMaps(Number((document.getElementById("threshold") || { value: 0.5 }).value)), counts = {};
      var over = changedCanvas(current[selA.value], current[selB.value], img.masks.gt, w, h, counts);
      out.textContent = "";
      out.appendChild(el("div", { cls: "panels" }, [panel(stageShort(selA.value) + " → " + stageShort(selB.value),
        el("div", { cls: "stack" }, [photo(w, h), over]),
        el("div", { cls: "legend" }, [
          el("span", {}, [el("span", { cls: "sw", style: "background:rgb(0,200,0)" }), "gained correct " + counts.gained]),
          el("span", {}, [el("span", { cls: "sw", style: "background:rgb(230,0,0)" }), "lost " + counts.lost]),
          el("span", {}, [el("span", { cls: "sw", style: "background:rgb(255,150,0)" }), "gained wrong " + counts.wrong])]))]));
    };
    selA.addEventListener("change", redraw); selB.addEventListener("change", redraw);
    var slider2 = document.getElementById("threshold");
    if (slider2) slider2.addEventListener("change", redraw);
    sheet.appendChild(el("h3", { text: "Changed pixels" }));
    sheet.appendChild(el("label", {}, ["from ", selA, " to ", selB]));
    sheet.appendChild(out);
    redraw();
  }

  // methods side by side
  if (d.methods.length) {
    sheet.appendChild(el("h3", { text: "Methods side by side" }));
    d.methods.forEach(function (m, j) {
      var decoded = img.methods[j], cells = [el("div", { cls: "name", text: m.method })];
      m.keys.forEach(function (k, i) { cells.push(panel("CAM: " + className(k) + (i === 0 && m.scores.cam != null ? " (mIoU " + pct(m.scores.cam) + " @ " + m.threshold.toFixed(2) + ")" : ""), heatStack(decoded.maps[i], w, h))); });
      if (decoded.pseudo) cells.push(panel("pseudo mask" + (m.scores.pseudo != null ? " (" + pct(m.scores.pseudo) + ")" : ""), labelCanvas(decoded.pseudo, w, h), legendFor([decoded.pseudo])));
      sheet.appendChild(el("div", { cls: "method-row", "data-method": m.method }, cells));
    });
  }
}
