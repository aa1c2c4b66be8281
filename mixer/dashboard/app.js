/* Isthmus mixer dashboard: polls mixer's JSON API every second and redraws what changed.
 *
 * The pure helpers (element building, formatting, chart series) come first and are exported for the
 * unit tests under node; the browser part starts at `start()`. Everything shown comes from proxies'
 * metadata, so text is always set with textContent, never parsed as HTML.
 */
"use strict";

const POLL_MS = 1000;
const CONFIG_EVERY = 10; // polls between two reads of /api/config
const PALETTE = [
  "#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f",
  "#ad1457", "#4e342e", "#558b2f", "#283593", "#00695c",
];
const UNKNOWN = "unknown";

// ---------- pure helpers ----------

// Colours are handed out in order of first sight (apps of one graph in name order), so the apps on
// screen never share one while there are fewer than the palette has; they stay put for the page's life.
const appColors = new Map();

function appColor(app) {
  if (!app || app === UNKNOWN) return "#9e9e9e";
  if (!appColors.has(app)) appColors.set(app, PALETTE[appColors.size % PALETTE.length]);
  return appColors.get(app);
}

function known(value) {
  return value && value !== UNKNOWN ? value : "";
}

/** "reviews v2" for a workload with an app and a version, else the workload's name. */
function nodeLabel(n) {
  const app = known(n.app);
  if (!app) return n.workload || n.id;
  const version = known(n.version);
  return version ? `${app} ${version}` : app;
}

function fmtRps(rps) {
  if (rps === null || rps === undefined) return "–";
  if (rps === 0) return "0";
  if (rps < 0.01) return "<0.01";
  if (rps < 10) return rps.toFixed(2);
  if (rps < 100) return rps.toFixed(1);
  return Math.round(rps).toString();
}

function fmtPct(ratio, digits = 1) {
  if (ratio === null || ratio === undefined) return "–";
  return `${(ratio * 100).toFixed(digits)}%`;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms).toString();
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function edgeLabel(e) {
  const parts = [];
  if (e.protocol === "tcp") {
    parts.push(`tcp ${fmtBytes(e.tcp_bytes || 0)}`);
  } else {
    parts.push(`${fmtRps(e.rps)} rps`);
    if (e.error_rate > 0) parts.push(`${fmtPct(e.error_rate)} err`);
  }
  if (e.mtls) parts.push("mTLS");
  return parts.join(" · ");
}

/**
 * Cytoscape elements for /api/graph: one node per workload, a parent box per app that has more than
 * one workload in a namespace (the versions of a service side by side), one edge per
 * (source, target, service, protocol).
 */
function graphElements(graph) {
  [...new Set(graph.nodes.map((n) => n.app))].sort().forEach(appColor);
  const perApp = new Map();
  for (const n of graph.nodes) {
    if (!known(n.app)) continue;
    const key = `${n.namespace}/${n.app}`;
    perApp.set(key, (perApp.get(key) || 0) + 1);
  }
  const elements = [];
  for (const [key, count] of perApp) {
    if (count < 2) continue;
    const app = key.slice(key.indexOf("/") + 1);
    elements.push({
      group: "nodes",
      data: { id: `app:${key}`, label: app, app, kind: "app", color: appColor(app) },
    });
  }
  for (const n of graph.nodes) {
    const key = `${n.namespace}/${n.app}`;
    const data = {
      id: n.id,
      label: nodeLabel(n),
      kind: "workload",
      workload: n.workload,
      namespace: n.namespace,
      app: n.app,
      version: n.version,
      color: appColor(n.app),
    };
    if (known(n.app) && perApp.get(key) > 1) data.parent = `app:${key}`;
    elements.push({ group: "nodes", data });
  }
  for (const e of graph.edges) {
    elements.push({
      group: "edges",
      data: {
        id: `${e.source}->${e.target}|${e.service}|${e.protocol}`,
        source: e.source,
        target: e.target,
        service: e.service,
        protocol: e.protocol,
        requests: e.requests,
        rps: e.rps,
        error_rate: e.error_rate,
        errors: e.error_rate > 0 ? 1 : 0,
        mtls: e.mtls ? 1 : 0,
        label: edgeLabel(e),
      },
    });
  }
  return elements;
}

/** A string that changes exactly when the set of elements (not their numbers) changes. */
function shapeKey(elements) {
  return elements
    .map((el) => `${el.data.id}<${el.data.parent || ""}`)
    .sort()
    .join("\n");
}

/**
 * uPlot data from /api/timeseries: one x per 5-second bucket over the whole history ending at the
 * bucket holding `now` (buckets without traffic are 0, not gaps), the total and each service's
 * requests/s, and the error rate in percent. The bucket in progress is scaled to the seconds it has
 * lasted so far, so the line does not dip at its end.
 */
function chartSeries(ts, now) {
  const step = ts.bucket_s;
  const last = Math.floor(now / step) * step;
  const first = last - ts.history_s + step;
  const byT = new Map(ts.points.map((p) => [p.t, p]));
  const services = [...new Set(ts.points.flatMap((p) => Object.keys(p.services)))].sort();
  const xs = [];
  const total = [];
  const errors = [];
  const per = services.map(() => []);
  for (let t = first; t <= last; t += step) {
    const p = byT.get(t);
    const elapsed = t === last ? Math.min(step, Math.max(now - t, 1)) : step;
    const scale = step / elapsed;
    xs.push(t);
    total.push(p ? p.rps * scale : 0);
    errors.push(p && p.rps > 0 ? p.error_rate * 100 : 0);
    services.forEach((s, i) => per[i].push(p && p.services[s] ? p.services[s] * scale : 0));
  }
  return { services, rps: [xs, total, ...per], errors: [xs, errors] };
}

function fmtTime(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  return d.toLocaleTimeString([], { hour12: false });
}

if (typeof module !== "undefined") {
  module.exports = {
    appColor, nodeLabel, fmtRps, fmtPct, fmtMs, edgeLabel, graphElements, shapeKey, chartSeries,
  };
}

// ---------- browser ----------

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== "") node.textContent = text;
  return node;
}

function cell(text, field, cls = "") {
  const td = el("td", { "data-field": field }, text);
  if (cls) td.className = cls;
  return td;
}

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

const GRAPH_STYLE = [
  {
    selector: "node[kind = 'workload']",
    style: {
      "background-color": "data(color)",
      label: "data(label)",
      color: "#1d2630",
      "font-size": 13,
      "text-valign": "bottom",
      "text-margin-y": 4,
      "text-background-color": "#fbfcfd",
      "text-background-opacity": 0.85,
      "text-background-padding": 2,
      width: 30,
      height: 30,
      "border-width": 2,
      "border-color": "#ffffff",
    },
  },
  {
    selector: "node[app = 'unknown']",
    style: { shape: "diamond", "background-color": "#9e9e9e" },
  },
  {
    selector: "node[kind = 'app']",
    style: {
      label: "data(label)",
      "text-valign": "top",
      "text-halign": "center",
      "font-size": 11,
      "font-weight": "bold",
      color: "data(color)",
      "background-color": "data(color)",
      "background-opacity": 0.07,
      "border-color": "data(color)",
      "border-width": 1,
      "border-style": "dashed",
      shape: "round-rectangle",
      padding: 14,
    },
  },
  {
    selector: "edge",
    style: {
      width: "mapData(rps, 0, 20, 1.5, 6)",
      "line-color": "#78909c",
      "target-arrow-color": "#78909c",
      "target-arrow-shape": "triangle",
      "curve-style": "bezier",
      label: "data(label)",
      "font-size": 11,
      color: "#37474f",
      "text-rotation": "autorotate",
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.9,
      "text-background-padding": 2,
    },
  },
  { selector: "edge[mtls = 1]", style: { "line-color": "#2e7d32", "target-arrow-color": "#2e7d32" } },
  {
    selector: "edge[errors = 1]",
    style: { "line-color": "#c62828", "target-arrow-color": "#c62828", color: "#c62828" },
  },
];

class Dashboard {
  constructor() {
    this.window = 60;
    this.polls = 0;
    this.shape = null;
    this.charts = null;
    this.chartServices = null;
    this.cy = cytoscape({
      container: document.getElementById("graph"),
      style: GRAPH_STYLE,
      wheelSensitivity: 0.2,
      minZoom: 0.3,
      maxZoom: 2.5,
    });
    window.cy = this.cy;
    document.getElementById("window").addEventListener("change", (ev) => {
      this.window = Number(ev.target.value);
      this.poll();
    });
    window.addEventListener("resize", () => this.resizeCharts());
  }

  async poll() {
    const w = this.window;
    const status = document.getElementById("status");
    try {
      const wants = [
        getJSON(`/api/graph?window=${w}`),
        getJSON(`/api/services?window=${w}`),
        getJSON("/api/denials"),
        getJSON("/api/ratelimits"),
        getJSON("/api/quota"),
        getJSON("/api/timeseries"),
      ];
      if (this.polls % CONFIG_EVERY === 0) wants.push(getJSON("/api/config"));
      const [graph, services, denials, ratelimits, quota, ts, config] = await Promise.all(wants);
      this.renderGraph(graph);
      this.renderServices(services.services);
      this.renderDenials(denials);
      this.renderRatelimits(ratelimits);
      this.renderQuota(quota);
      this.renderCharts(ts);
      if (config) this.renderConfig(config);
      this.polls += 1;
      document.body.dataset.updates = String(this.polls);
      status.className = "status status-live";
      status.dataset.state = "live";
      status.textContent = `live · ${fmtTime(Date.now() / 1000)}`;
    } catch (err) {
      // keep showing what we last knew, and say that it is stale
      status.className = "status status-down";
      status.dataset.state = "down";
      status.textContent = `mixer unreachable, retrying (${err.message})`;
    }
  }

  run() {
    const loop = async () => {
      await this.poll();
      setTimeout(loop, POLL_MS);
    };
    loop();
  }

  renderGraph(graph) {
    const elements = graphElements(graph);
    const shape = shapeKey(elements);
    const cy = this.cy;
    const container = document.getElementById("graph");
    const empty = graph.nodes.length === 0;
    container.classList.toggle("is-empty", empty);
    document.getElementById("graph-empty").hidden = !empty;
    if (shape !== this.shape) {
      cy.batch(() => {
        cy.elements().remove();
        cy.add(elements);
      });
      this.shape = shape;
      if (!empty) this.layout();
    } else {
      cy.batch(() => {
        for (const e of elements) cy.getElementById(e.data.id).data(e.data);
      });
    }
    const requests = graph.edges.reduce((sum, e) => sum + e.requests, 0);
    container.dataset.nodeCount = String(graph.nodes.length);
    container.dataset.edgeCount = String(graph.edges.length);
    container.dataset.requests = String(requests);
    document.getElementById("graph-summary").textContent = empty
      ? ""
      : `${graph.nodes.length} workloads, ${graph.edges.length} edges, ${requests} requests in ${graph.window_s} s`;
  }

  layout() {
    const cy = this.cy;
    // trees grow from the workloads nobody calls (the ingress side); a cycle gets one of its own as root
    const workloads = cy.nodes("[kind = 'workload']");
    let roots = workloads.filter((n) => n.incomers("edge").filter((e) => !e.isLoop()).empty());
    for (const component of cy.elements().components()) {
      if (component.intersection(roots).empty()) {
        const first = component.nodes("[kind = 'workload']").first();
        if (first.nonempty()) roots = roots.union(first);
      }
    }
    cy.resize();
    cy.layout({
      name: "breadthfirst",
      directed: true,
      roots,
      direction: "rightward",
      spacingFactor: 0.9,
      padding: 30,
      nodeDimensionsIncludeLabels: true,
      animate: false,
    }).run();
  }

  renderServices(services) {
    const body = document.querySelector("#services tbody");
    body.replaceChildren(
      ...services.map((s) => {
        const row = el("tr", { "data-service": s.service, "data-requests": String(s.requests) });
        const rate = s.success_rate;
        const rateCls = rate === null ? "" : rate >= 0.99 ? "ok" : rate >= 0.95 ? "warn" : "bad";
        row.append(
          cell(s.service, "service", "wrap"),
          cell(fmtRps(s.rps), "rps", "num"),
          cell(fmtPct(rate, 2), "success_rate", `num ${rateCls}`),
          cell(fmtMs(s.p50_ms), "p50_ms", "num"),
          cell(fmtMs(s.p90_ms), "p90_ms", "num"),
          cell(fmtMs(s.p99_ms), "p99_ms", "num"),
          cell(String(s.requests), "requests", "num"),
        );
        return row;
      }),
    );
    document.getElementById("services-empty").hidden = services.length > 0;
  }

  renderEvents(name, data, columns) {
    const total = document.getElementById(`${name}-total`);
    total.textContent = String(data.total);
    total.dataset.total = String(data.total);
    total.classList.toggle("nonzero", data.total > 0);
    const body = document.querySelector(`#${name} tbody`);
    body.replaceChildren(
      ...data.events.slice(0, 20).map((ev) => {
        const row = el("tr", { "data-time": String(ev.time) });
        row.append(cell(fmtTime(ev.time), "time"), ...columns.map(([field, fn, cls]) => cell(fn(ev), field, cls)));
        return row;
      }),
    );
    document.getElementById(`${name}-empty`).hidden = data.events.length > 0;
  }

  renderDenials(data) {
    this.renderEvents("denials", data, [
      ["rule", (ev) => ev.rule || "", ""],
      ["source", (ev) => ev.source_principal || ev.source_ip || UNKNOWN, "wrap"],
      ["request", (ev) => `${ev.host || ""}${ev.path || ""}`, "wrap"],
      ["http_status", (ev) => String(ev.http_status ?? ""), "num bad"],
    ]);
  }

  renderRatelimits(data) {
    this.renderEvents("ratelimits", data, [
      ["domain", (ev) => ev.domain || "", ""],
      ["descriptor", (ev) => ev.descriptor || "", "wrap"],
      ["limit", (ev) => ev.limit || "", ""],
      ["reason", (ev) => ev.reason || "", ""],
    ]);
  }

  renderQuota(data) {
    document.getElementById("quota-backend").textContent = data.backend ? `backend: ${data.backend}` : "";
    const body = document.querySelector("#quota tbody");
    body.replaceChildren(
      ...data.usage.map((u) => {
        const row = el("tr", { "data-descriptor": u.descriptor, "data-used": String(u.used) });
        const ratio = u.limit > 0 ? Math.min(1, u.used / u.limit) : 0;
        const bar = el("div", { class: "bar" });
        const fill = el("span", { style: `width: ${(ratio * 100).toFixed(1)}%` });
        if (u.used >= u.limit) fill.className = "full";
        bar.append(fill);
        const barCell = el("td", { "data-field": "bar" });
        barCell.append(bar);
        row.append(
          cell(u.domain, "domain"),
          cell(u.descriptor, "descriptor", "wrap"),
          cell(`${u.used} / ${u.limit} per ${u.unit}`, "used"),
          barCell,
          cell(u.shadow_mode ? "shadow" : "enforced", "mode"),
        );
        return row;
      }),
    );
    document.getElementById("quota-empty").hidden = data.usage.length > 0;
  }

  renderConfig(c) {
    const parts = [
      c.file ? `config ${c.file}` : "no config file",
      `${c.policy_rules.length} policy rule${c.policy_rules.length === 1 ? "" : "s"}`,
      `quota domains: ${c.quota_domains.length ? c.quota_domains.join(", ") : "none"}`,
      `quota failure mode: ${c.failure_mode}`,
    ];
    document.getElementById("config-summary").textContent = parts.join(" · ");
  }

  chartWidth(id) {
    return Math.max(260, document.getElementById(id).clientWidth || 400);
  }

  renderCharts(ts) {
    const now = ts.now ?? Date.now() / 1000;
    const data = chartSeries(ts, now);
    const key = data.services.join("\n");
    if (!this.charts || this.chartServices !== key) {
      if (this.charts) this.charts.forEach((c) => c.destroy());
      const axes = () => [{}, { size: 50 }];
      const rpsSeries = [
        {},
        { label: "total", stroke: "#16202b", width: 2, value: (u, v) => (v == null ? "–" : fmtRps(v)) },
        ...data.services.map((s) => ({
          label: s.split(".")[0],
          stroke: appColor(s.split(".")[0]),
          width: 1.5,
          value: (u, v) => (v == null ? "–" : fmtRps(v)),
        })),
      ];
      const height = 200;
      this.charts = [
        new uPlot(
          { width: this.chartWidth("chart-rps"), height, series: rpsSeries, axes: axes(), scales: { y: { range: (u, lo, hi) => [0, Math.max(1, hi)] } } },
          data.rps,
          document.getElementById("chart-rps"),
        ),
        new uPlot(
          {
            width: this.chartWidth("chart-errors"),
            height,
            axes: axes(),
            scales: { y: { range: (u, lo, hi) => [0, Math.max(5, hi)] } },
            series: [{}, { label: "5xx %", stroke: "#c62828", fill: "rgba(198,40,40,0.1)", width: 1.5 }],
          },
          data.errors,
          document.getElementById("chart-errors"),
        ),
      ];
      this.chartServices = key;
    } else {
      this.charts[0].setData(data.rps);
      this.charts[1].setData(data.errors);
    }
  }

  resizeCharts() {
    if (!this.charts) return;
    this.charts[0].setSize({ width: this.chartWidth("chart-rps"), height: 200 });
    this.charts[1].setSize({ width: this.chartWidth("chart-errors"), height: 200 });
  }
}

if (typeof window !== "undefined" && typeof document !== "undefined") {
  window.addEventListener("DOMContentLoaded", () => {
    window.dashboard = new Dashboard();
    window.dashboard.run();
  });
}
