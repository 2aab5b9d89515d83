// vlmflow ui: draws the view its URL names from /api/ (crates/ui/src/api.rs). No framework and
// no build step: the file is compiled into the binary as it is.
"use strict";

const main = document.getElementById("main");
const COLOURS = ["#2f6fd6", "#d9480f", "#2e8b57", "#9c36b5", "#e0a100", "#0b7285", "#c2255c", "#5c940d"];
const SVG = "http://www.w3.org/2000/svg";

// ------------------------------------------------------------------ helpers

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "oninput" || k === "onchange") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const stateClass = (s) => String(s).replace(/ /g, "-");
const badge = (s) => el("span", { class: `badge s-${stateClass(s)}` }, s);
const when = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "");
function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}
function number(v) {
  if (typeof v !== "number") return JSON.stringify(v);
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1e-3 && Math.abs(v) < 1e6 ? String(Number(v.toPrecision(4))) : v.toExponential(2);
}

// Params as flat "a.b" → value pairs.
function flatten(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) out[prefix] = value;
  return out;
}

function show(error) {
  main.replaceChildren(el("p", { class: "error" }, String(error.message || error)));
}

function stamp() {
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// Redraw every 2 s while `live()` says so (a build is running), the way metrics reach the
// database.
function poll(draw, live) {
  const tick = async () => {
    try {
      await draw();
      stamp();
    } catch (e) {
      show(e);
      return;
    }
    if (live()) setTimeout(tick, 2000);
  };
  return tick();
}

// ------------------------------------------------------------------ charts

// Exponential moving average with TensorBoard's debiasing.
function smooth(points, weight) {
  if (!weight) return points;
  let last = 0, n = 0;
  return points.map(([x, y]) => {
    last = last * weight + (1 - weight) * y;
    n += 1;
    return [x, last / (1 - Math.pow(weight, n))];
  });
}

function ticks(lo, hi, count) {
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count || 1)));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= count) || step * 10;
  const out = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + nice * 1e-9; v += nice) out.push(v);
  return out;
}

// series: [{label, colour, points: [[step, value]], run}]
function lineChart(title, series, { logY = false, smoothing = 0, width = 560, height = 260 } = {}) {
  const pad = { l: 56, r: 12, t: 26, b: 28 };
  const ys = (v) => (logY ? Math.log10(v) : v);
  const all = series.flatMap((s) => s.points).filter(([, y]) => !logY || y > 0);
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, "data-title": title });
  root.append(svg("text", { class: "title", x: pad.l, y: 16 }, title));
  if (!all.length) return root;
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => ys(p[1]))), Math.max(...all.map((p) => ys(p[1])))];
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((ys(y) - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  for (const t of ticks(y0, y1, 5)) {
    const y = height - pad.b - ((t - y0) / (y1 - y0)) * (height - pad.t - pad.b);
    root.append(svg("line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y, y2: y }));
    root.append(svg("text", { class: "tick", x: pad.l - 6, y: y + 3, "text-anchor": "end" }, number(logY ? Math.pow(10, t) : t)));
  }
  for (const t of ticks(x0, x1, 6)) {
    root.append(svg("text", { class: "tick", x: X(t), y: height - 10, "text-anchor": "middle" }, number(t)));
  }
  root.append(svg("line", { class: "axis", x1: pad.l, x2: pad.l, y1: pad.t, y2: height - pad.b }));
  root.append(svg("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: height - pad.b, y2: height - pad.b }));
  const path = (points) =>
    points.filter(([, y]) => !logY || y > 0).map(([x, y], i) => `${i ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
  for (const s of series) {
    if (smoothing) root.append(svg("path", { class: "raw", d: path(s.points), stroke: s.colour }));
    const line = svg("path", { class: "series", d: path(smooth(s.points, smoothing)), stroke: s.colour, "data-run": s.run });
    line.append(svg("title", {}, s.label));
    root.append(line);
  }
  return root;
}

function legend(series) {
  return el("div", { class: "legend" }, series.map((s) => el("span", {}, el("i", { style: `background:${s.colour}` }), s.label)));
}

// ------------------------------------------------------------------ DAG

// Columns by longest path from a source, rows in Stagefile order.
function layout(stages) {
  const depth = {};
  const byName = Object.fromEntries(stages.map((s) => [s.name, s]));
  const of = (name) => {
    if (depth[name] === undefined) depth[name] = Math.max(-1, ...byName[name].needs.map(of)) + 1;
    return depth[name];
  };
  stages.forEach((s) => of(s.name));
  // Column by column, a stage sits near the mean row of what it needs (fewer crossing edges).
  const at = {};
  const columns = Math.max(...Object.values(depth)) + 1;
  for (let col = 0; col < columns; col++) {
    const here = stages.filter((s) => depth[s.name] === col);
    const centre = (s) => (s.needs.length ? s.needs.reduce((sum, n) => sum + at[n].row, 0) / s.needs.length : Infinity);
    here
      .map((s, i) => [s, centre(s), i])
      .sort((a, b) => (a[1] - b[1]) || (a[2] - b[2]))
      .forEach(([s], row) => (at[s.name] = { col, row }));
  }
  return at;
}

async function viewDag() {
  await poll(async () => {
    const { stages } = await api("/api/stages");
    const at = layout(stages);
    const W = 170, H = 54, DX = 205, DY = 76;
    const cols = Math.max(0, ...Object.values(at).map((p) => p.col)) + 1;
    const rows = Math.max(0, ...Object.values(at).map((p) => p.row)) + 1;
    const [width, height] = [cols * DX - DX + W + 40, rows * DY - DY + H + 40];
    const root = svg("svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, style: `width:100%;max-width:${width}px` });
    const pos = (name) => ({ x: 20 + at[name].col * DX, y: 20 + at[name].row * DY });
    for (const s of stages) {
      for (const need of s.needs) {
        const a = pos(need), b = pos(s.name);
        const [sx, sy, tx, ty] = [a.x + W, a.y + H / 2, b.x, b.y + H / 2];
        const mid = (sx + tx) / 2;
        root.append(svg("path", { class: "edge", d: `M${sx},${sy} C${mid},${sy} ${mid},${ty} ${tx},${ty}`, "data-from": need, "data-to": s.name }));
      }
    }
    for (const s of stages) {
      const { x, y } = pos(s.name);
      const node = svg("g", { class: `node state-${stateClass(s.state)}`, "data-stage": s.name, "data-state": s.state, transform: `translate(${x},${y})` });
      node.append(svg("rect", { width: W, height: H }));
      node.append(svg("text", { class: "name", x: 12, y: 23 }, s.name));
      node.append(svg("text", { class: "sub", x: 12, y: 42 }, `${s.kind} · ${s.state}`));
      node.append(svg("title", {}, [s.description, ...s.reasons].filter(Boolean).join("\n")));
      const run = s.current_run ?? (s.latest && s.latest.id);
      if (run) node.addEventListener("click", () => (location.href = `/runs/${run}`));
      root.append(node);
    }
    const table = el("table", { class: "stages" },
      el("tr", {}, el("th", {}, "stage"), el("th", {}, "state"), el("th", {}, "why"), el("th", {}, "latest run")),
      stages.map((s) => el("tr", { "data-stage": s.name },
        el("td", {}, s.name),
        el("td", {}, badge(s.state)),
        el("td", {}, s.state === "failed" && s.latest ? s.latest.error || "" : s.reasons.join("; ") || (s.state === "fresh" ? "up to date" : "")),
        el("td", {}, s.latest ? el("a", { href: `/runs/${s.latest.id}` }, `#${s.latest.id} ${s.latest.status}`) : "—"))));
    main.replaceChildren(el("h1", {}, "Pipeline"), el("div", { class: "card" }, root), table);
  }, () => true); // a build may start at any time: the DAG keeps watching
}

// ------------------------------------------------------------------ runs

const RUN_COLUMNS = [
  ["id", "#", (r) => r.id],
  ["stage", "stage", (r) => r.stage],
  ["status", "status", (r) => r.status],
  ["started", "started", (r) => r.started_at],
  ["seconds", "took", (r) => r.seconds ?? -1],
  ["host", "host", (r) => r.host],
  ["device", "device", (r) => r.device],
];

function paramsText(r) {
  return Object.entries(flatten(r.params)).map(([k, v]) => `${k}=${typeof v === "number" ? number(v) : JSON.stringify(v)}`).join(" ");
}

async function viewRuns() {
  const runs = await api("/api/runs");
  let sort = { key: "id", asc: false };
  const selected = new Set();
  const filter = el("input", { type: "search", placeholder: "filter: stage, status, params, host…" });
  const compare = el("button", { disabled: true, onclick: () => (location.href = `/compare?ids=${[...selected].join(",")}`) }, "Compare selected");
  const body = el("tbody");
  const head = el("tr", {}, el("th", {}), RUN_COLUMNS.map(([key, label]) => {
    const th = el("th", { class: "sortable", "data-key": key }, label);
    th.addEventListener("click", () => {
      sort = { key, asc: sort.key === key ? !sort.asc : true };
      draw();
    });
    return th;
  }), el("th", {}, "params"), el("th", {}, "final metrics"));
  function draw() {
    const get = RUN_COLUMNS.find((c) => c[0] === sort.key)[2];
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const rows = runs
      .filter((r) => words.every((w) => `${r.stage} ${r.status} ${r.host} ${r.device} ${paramsText(r)}`.toLowerCase().includes(w)))
      .sort((a, b) => ((get(a) > get(b)) - (get(a) < get(b))) * (sort.asc ? 1 : -1));
    head.querySelectorAll("th[data-key]").forEach((th) => {
      th.classList.toggle("sorted", th.dataset.key === sort.key);
      th.classList.toggle("asc", th.dataset.key === sort.key && sort.asc);
    });
    body.replaceChildren(...rows.map((r) => {
      const box = el("input", { type: "checkbox", checked: selected.has(r.id), onchange: (e) => {
        e.target.checked ? selected.add(r.id) : selected.delete(r.id);
        compare.disabled = selected.size < 1;
      } });
      const metrics = Object.entries(r.metrics).map(([k, v]) => `${k}=${number(v)}`).join(" ");
      return el("tr", { "data-run": r.id },
        el("td", {}, box),
        el("td", {}, el("a", { href: `/runs/${r.id}` }, `#${r.id}`)),
        el("td", {}, r.stage),
        el("td", {}, badge(r.status)),
        el("td", {}, when(r.started_at)),
        el("td", { class: "num" }, seconds(r.seconds)),
        el("td", {}, r.job ? `${r.host} (Slurm job ${r.job})` : r.host),
        el("td", {}, r.device),
        el("td", {}, el("code", {}, paramsText(r))),
        el("td", {}, el("code", {}, metrics)));
    }));
  }
  filter.oninput = draw;
  draw();
  stamp();
  const sweeps = await api("/api/sweeps");
  const openSweep = sweeps.length
    ? el("select", { class: "sweeps", onchange: (e) => e.target.value && (location.href = `/compare?sweep=${encodeURIComponent(e.target.value)}`) },
      el("option", { value: "" }, "Compare a sweep…"),
      sweeps.map((w) => el("option", { value: w.name }, `${w.name}: ${w.trials} trials of ${w.axes.join(" ")}`)))
    : "";
  main.replaceChildren(el("h1", {}, `Runs (${runs.length})`), el("div", { class: "toolbar" }, filter, compare, openSweep), el("table", { class: "runs" }, el("thead", {}, head), body));
}

// ------------------------------------------------------------------ compare

function sideBySide(runs, rowsOf, cls, label) {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(rowsOf(r))))].sort();
  return el("table", { class: cls },
    el("tr", {}, el("th", {}, ""), runs.map((r, i) => el("th", { style: `color:${COLOURS[i % COLOURS.length]}` }, label(r)))),
    keys.map((k) => {
      const values = runs.map((r) => rowsOf(r)[k]);
      const differs = new Set(values.map((v) => JSON.stringify(v))).size > 1;
      return el("tr", { class: differs ? "differs" : null, "data-key": k }, el("td", {}, k),
        values.map((v) => el("td", { class: typeof v === "number" ? "num" : null }, v === undefined ? "—" : typeof v === "number" ? number(v) : JSON.stringify(v))));
    }));
}

// A sweep's runs: those of the stages whose run differs between its trials (what it varied, and
// what that changed), with the trial each belongs to.
async function sweepRuns(name) {
  const sweep = await api(`/api/sweeps/${encodeURIComponent(name)}`);
  const stages = [...new Set(sweep.trials.flatMap((t) => Object.keys(t.runs)))];
  const varied = stages.filter((s) => new Set(sweep.trials.map((t) => t.runs[s])).size > 1);
  const trialOf = {};
  for (const t of sweep.trials) for (const s of varied) if (t.runs[s]) trialOf[t.runs[s]] = t.trial;
  const ids = Object.keys(trialOf).sort((a, b) => trialOf[a] - trialOf[b] || a - b);
  const trials = el("table", { class: "trials" },
    el("tr", {}, el("th", {}, "trial"), el("th", {}, "params"), el("th", {}, "status"), el("th", {}, "runs")),
    sweep.trials.map((t) => el("tr", { "data-trial": t.trial },
      el("td", {}, `${t.trial}`),
      el("td", {}, el("code", {}, Object.entries(t.params).map(([k, v]) => `${k}=${typeof v === "number" ? number(v) : JSON.stringify(v)}`).join(" "))),
      el("td", {}, badge(t.status === "ok" ? "ran" : t.status), t.error ? ` ${t.error}` : ""),
      el("td", {}, Object.entries(t.runs).map(([s, id]) => el("a", { href: `/runs/${id}` }, `#${id} ${s} `))))));
  return { sweep, ids, trialOf, trials };
}

async function viewCompare() {
  const query = new URLSearchParams(location.search);
  let ids = (query.get("ids") || "").split(",").filter(Boolean);
  let sweep = null;
  if (query.get("sweep")) {
    sweep = await sweepRuns(query.get("sweep"));
    ids = sweep.ids;
  }
  const label = (r) => `#${r.id} ${r.stage}${sweep ? ` (trial ${sweep.trialOf[r.id]})` : ""}`;
  if (!ids.length) {
    main.replaceChildren(el("h1", {}, "Compare"), el("p", { class: "muted" }, "Select runs in the ", el("a", { href: "/runs" }, "runs table"), " to compare them."));
    return;
  }
  let runs = [];
  let smoothing = 0, logY = false;
  const charts = el("div", { class: "charts" });
  let series = [];
  const drawCharts = () => {
    const names = [...new Set(series.flatMap((s) => Object.keys(s)))].sort();
    charts.replaceChildren(...names.map((name) => {
      const lines = runs.map((r, i) => ({ label: label(r), colour: COLOURS[i % COLOURS.length], run: r.id, points: series[i][name] || [] })).filter((l) => l.points.length);
      return el("div", { class: "card" }, lineChart(name, lines, { smoothing, logY }));
    }));
  };
  const slider = el("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0, oninput: (e) => { smoothing = Number(e.target.value); drawCharts(); } });
  const log = el("input", { type: "checkbox", onchange: (e) => { logY = e.target.checked; drawCharts(); } });
  await poll(async () => {
    runs = await Promise.all(ids.map((id) => api(`/api/runs/${id}`)));
    series = await Promise.all(ids.map((id) => api(`/api/runs/${id}/series`)));
    drawCharts();
    const title = sweep
      ? [el("h1", {}, `Sweep ${sweep.sweep.name}: ${sweep.sweep.trials.length} trials of ${sweep.sweep.axes.join(" ")}`), sweep.trials]
      : [el("h1", {}, `Compare ${runs.map((r) => `#${r.id}`).join(", ")}`)];
    main.replaceChildren(
      ...title,
      legend(runs.map((r, i) => ({ label: `${label(r)} ${r.status}`, colour: COLOURS[i % COLOURS.length] }))),
      el("div", { class: "toolbar" }, el("label", {}, "smoothing ", slider), el("label", {}, log, " log axis")),
      charts,
      el("h2", {}, "Params"), sideBySide(runs, (r) => flatten(r.params), "params", label),
      el("h2", {}, "Final metrics"), sideBySide(runs, (r) => r.metrics, "metrics", label));
  }, () => runs.some((r) => r.status === "running"));
}

// ------------------------------------------------------------------ one run

// The lineage as a graph: this run at the right, what it consumed to its left.
function lineageGraph(root) {
  const nodes = [];
  const edges = [];
  const seen = new Map();
  const visit = (l, depth) => {
    const key = `${l.stage}#${l.run}`;
    if (!seen.has(key)) {
      seen.set(key, { l, depth });
      nodes.push(key);
    } else seen.get(key).depth = Math.max(seen.get(key).depth, depth);
    for (const u of l.upstream) {
      edges.push([`${u.stage}#${u.run}`, key]);
      visit(u, depth + 1);
    }
  };
  visit(root, 0);
  const maxDepth = Math.max(...[...seen.values()].map((n) => n.depth));
  const rows = {};
  const pos = {};
  for (const key of nodes) {
    const col = maxDepth - seen.get(key).depth;
    rows[col] = (rows[col] || 0) + 1;
    pos[key] = { x: 10 + col * 200, y: 10 + (rows[col] - 1) * 64 };
  }
  const W = 160, H = 44;
  const svgRoot = svg("svg", { class: "lineage", width: (maxDepth + 1) * 200 + 20, height: Math.max(...Object.values(rows)) * 64 + 20 });
  for (const [from, to] of edges) {
    const a = pos[from], b = pos[to];
    const mid = (a.x + W + b.x) / 2;
    svgRoot.append(svg("path", { class: "edge", d: `M${a.x + W},${a.y + H / 2} C${mid},${a.y + H / 2} ${mid},${b.y + H / 2} ${b.x},${b.y + H / 2}` }));
  }
  for (const key of nodes) {
    const { l } = seen.get(key);
    const g = svg("g", { class: `node${l === root ? " root" : ""}`, "data-run": l.run, transform: `translate(${pos[key].x},${pos[key].y})` });
    g.append(svg("rect", { width: W, height: H }));
    g.append(svg("text", { x: 10, y: 18, "font-weight": 600 }, l.stage));
    g.append(svg("text", { x: 10, y: 34, fill: "#667080" }, `run #${l.run} · ${l.status}`));
    g.addEventListener("click", () => (location.href = `/runs/${l.run}`));
    svgRoot.append(g);
  }
  return svgRoot;
}

const IMAGE = /\.(png|jpe?g|svg|webp)$/i;
const JSON_FILE = /\.json$/i;

function fileView(run, f) {
  const url = `/api/runs/${run.id}/file?path=${encodeURIComponent(f.path)}`;
  const label = el("div", {}, el("a", { href: url }, f.path), el("span", { class: "muted" }, ` ${(f.bytes / 1024).toFixed(1)} KiB`));
  if (IMAGE.test(f.path) && f.bytes < 8 << 20) return el("div", { class: "file" }, label, el("img", { src: url, alt: f.path }));
  if (JSON_FILE.test(f.path) && f.bytes < 256 << 10) {
    const pre = el("pre", { class: "json" }, "…");
    fetch(url).then((r) => r.json()).then((v) => (pre.textContent = JSON.stringify(v, null, 2))).catch(() => (pre.textContent = "(not JSON)"));
    return el("div", { class: "file" }, label, pre);
  }
  return el("div", { class: "file" }, label);
}

function keyValues(object, cls) {
  const rows = Object.entries(object);
  if (!rows.length) return el("p", { class: "muted" }, "none");
  return el("table", { class: `kv ${cls}` }, rows.map(([k, v]) => el("tr", { "data-key": k }, el("td", {}, k), el("td", {}, typeof v === "number" ? number(v) : JSON.stringify(v)))));
}

async function viewRun(id) {
  let run = null;
  await poll(async () => {
    run = await api(`/api/runs/${id}`);
    const series = await api(`/api/runs/${id}/series`);
    const curves = Object.entries(series).map(([name, points]) =>
      el("div", { class: "card" }, lineChart(name, [{ label: name, colour: COLOURS[0], run: run.id, points }])));
    const images = run.files.filter((f) => IMAGE.test(f.path) || JSON_FILE.test(f.path));
    const others = run.files.filter((f) => !images.includes(f));
    main.replaceChildren(...[
      el("h1", {}, `${run.stage} · run #${run.id} `, badge(run.status)),
      el("table", { class: "kv summary" },
        el("tr", {}, el("td", {}, "started"), el("td", {}, when(run.started_at))),
        el("tr", {}, el("td", {}, "took"), el("td", {}, seconds(run.seconds))),
        el("tr", {}, el("td", {}, "where"), el("td", {}, `${run.host}${run.job ? ` (Slurm job ${run.job})` : ""} · ${run.device}`)),
        el("tr", {}, el("td", {}, "key"), el("td", {}, el("code", {}, run.key))),
        el("tr", {}, el("td", {}, "artifact"), el("td", {}, el("code", {}, run.artifact || "—"))),
        run.source_run ? el("tr", {}, el("td", {}, "restored from"), el("td", {}, el("a", { href: `/runs/${run.source_run}` }, `run #${run.source_run}`))) : [],
        run.error ? el("tr", {}, el("td", {}, "error"), el("td", { class: "error" }, run.error)) : []),
      el("div", { class: "columns" },
        el("div", {}, el("h2", {}, "Params"), keyValues(flatten(run.params), "params")),
        el("div", {}, el("h2", {}, "Final metrics"), keyValues(run.metrics, "metrics"))),
      curves.length ? [el("h2", {}, "Curves"), el("div", { class: "charts" }, curves)] : [],
      el("h2", {}, "Provenance"), el("div", { class: "card" }, lineageGraph(run.lineage)),
      el("h2", {}, `Files (${run.files.length})`),
      el("div", { class: "files" }, images.map((f) => fileView(run, f))),
      others.length ? el("table", { class: "other-files" }, others.map((f) => el("tr", {}, el("td", {}, el("a", { href: `/api/runs/${run.id}/file?path=${encodeURIComponent(f.path)}` }, f.path)), el("td", { class: "num" }, `${(f.bytes / 1024).toFixed(1)} KiB`)))) : [],
      el("h2", {}, "Inputs"), run.inputs.length ? el("table", { class: "inputs" }, run.inputs.map(([p, d]) => el("tr", {}, el("td", {}, p), el("td", {}, el("code", {}, d.slice(0, 16)))))) : el("p", { class: "muted" }, "none"),
      el("h2", {}, "Log"), el("pre", { class: "log" }, run.log || "(empty)"),
    ].flat());
  }, () => run && run.status === "running");
}

// ------------------------------------------------------------------ chat

async function viewChat() {
  const bundles = await api("/api/bundles");
  if (!bundles.length) {
    main.replaceChildren(el("h1", {}, "Chat"), el("p", { class: "muted" }, "No chat bundle is built yet: build a chat-export stage, then come back."));
    return;
  }
  let image = null;
  let history = [];
  const pick = el("select", { class: "bundle" }, bundles.map((b) => el("option", { value: b.stage }, `${b.stage} (${b.path})`)));
  const preview = el("img", { class: "preview", alt: "" });
  const file = el("input", { type: "file", accept: "image/*" });
  const drop = el("div", { class: "drop" }, el("p", { class: "muted" }, "Drop an image here, or "), file, preview);
  const take = (f) => {
    if (!f) return;
    image = f;
    history = [];
    log.replaceChildren();
    preview.src = URL.createObjectURL(f);
  };
  file.onchange = () => take(file.files[0]);
  drop.addEventListener("dragover", (e) => e.preventDefault());
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    take(e.dataTransfer.files[0]);
  });
  const log = el("div", { class: "conversation" });
  const question = el("input", { type: "text", class: "question", placeholder: "What colour is the shape?" });
  const ask = el("button", {}, "Ask");
  const send = async () => {
    const q = question.value.trim();
    if (!image || !q) return;
    ask.disabled = true;
    const answer = el("div", { class: "answer" });
    log.append(el("div", { class: "asked" }, q), answer);
    const url = `/api/chat?stage=${encodeURIComponent(pick.value)}&question=${encodeURIComponent(q)}&history=${encodeURIComponent(JSON.stringify(history))}`;
    try {
      const response = await fetch(url, { method: "POST", body: image });
      if (!response.ok) throw new Error((await response.json()).error);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        answer.textContent += decoder.decode(value, { stream: true });
      }
      history.push([q, answer.textContent]);
      question.value = "";
    } catch (e) {
      answer.classList.add("error");
      answer.textContent = String(e.message || e);
    }
    ask.disabled = false;
  };
  ask.onclick = send;
  question.addEventListener("keydown", (e) => e.key === "Enter" && send());
  pick.onchange = () => {
    history = [];
    log.replaceChildren();
  };
  main.replaceChildren(el("h1", {}, "Chat"), el("div", { class: "toolbar" }, el("label", {}, "bundle ", pick)), drop, log, el("div", { class: "toolbar" }, question, ask));
}

// ------------------------------------------------------------------ routing

const path = location.pathname.replace(/\/+$/, "") || "/dag";
const view = path.startsWith("/runs/") ? "runs" : path.slice(1) || "dag";
document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
let shown;
if (path === "/" || path === "/dag") shown = viewDag();
else if (path === "/runs") shown = viewRuns();
else if (path.startsWith("/runs/")) shown = viewRun(Number(path.split("/")[2]));
else if (path === "/compare") shown = viewCompare();
else if (path === "/chat") shown = viewChat();
else shown = Promise.reject(new Error(`no view at ${path}`));
shown.catch(show);
