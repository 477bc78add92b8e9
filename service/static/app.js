// tswarm status page: a table of nodes and a 24 h chart per node, refreshed without reloading.
// Reads /api/nodes and /api/readings like any reader. Asks for the read token only when the
// service answers 401, and keeps it in localStorage. `?refresh=SECONDS` sets the refresh period.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = Math.max(1, Number(params.get("refresh")) || 30) * 1000;
  const DAY_S = 86400;
  const TOKEN_KEY = "tswarm.readToken";
  const HEALTH_TEXT = { ok: "ok", late: "late", silent: "silent", halted: "halted", never: "never seen" };

  const series = new Map(); // node name -> {t: [], temperature: [], humidity: [], last: "RFC 3339" | null}
  const charts = new Map(); // node name -> {box, plot}
  let windowEndS = Date.now() / 1000; // the service's "now" at the last refresh

  // -- talking to the service ---------------------------------------------------------------

  class Unauthorized extends Error {}

  async function get(path) {
    const token = localStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const resp = await fetch(path, { headers, cache: "no-store" });
    if (resp.status === 401) throw new Unauthorized(path);
    if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
    return resp;
  }

  let tokenPrompt = null;
  function askForToken(refused) {
    if (tokenPrompt) return tokenPrompt;
    const dialog = document.getElementById("token-dialog");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    document.getElementById("token-error").hidden = !refused;
    tokenPrompt = new Promise((resolve) => {
      form.addEventListener("submit", () => {
        localStorage.setItem(TOKEN_KEY, input.value.trim());
        input.value = "";
        tokenPrompt = null;
        resolve();
      }, { once: true });
    });
    dialog.showModal();
    return tokenPrompt;
  }

  async function read(path) {
    for (;;) {
      try {
        return await get(path);
      } catch (err) {
        if (!(err instanceof Unauthorized)) throw err;
        const refused = localStorage.getItem(TOKEN_KEY) !== null;
        localStorage.removeItem(TOKEN_KEY);
        await askForToken(refused);
      }
    }
  }

  // -- the table -------------------------------------------------------------------------------

  const seconds = (rfc3339) => Date.parse(rfc3339.slice(0, 23) + "Z") / 1000; // ns -> ms precision

  function ago(s) {
    if (s == null) return "never";
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (s >= size) return `${Math.floor(s / size)} ${unit} ago`;
    }
    return `${Math.max(0, Math.round(s))} s ago`;
  }

  const fmt = (v, unit) => (v == null ? "–" : `${v.toFixed(1)} ${unit}`);

  function cell(label, text, className) {
    const td = document.createElement("td");
    td.dataset.label = label;
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function healthBadge(health) {
    const span = document.createElement("span");
    span.className = `health ${health}`;
    span.textContent = HEALTH_TEXT[health] || health;
    return span;
  }

  function renderTable(report) {
    const body = document.querySelector("#nodes tbody");
    const rows = report.nodes.map((n) => {
      const tr = document.createElement("tr");
      tr.dataset.node = n.name;
      tr.dataset.health = n.health;
      tr.append(cell("Node", n.name, "name"));
      const health = cell("Health", "", "health-cell");
      health.append(healthBadge(n.health));
      tr.append(health);
      tr.append(cell("Temperature", fmt(n.temperature, "°C"), "num temperature"));
      tr.append(cell("Humidity", fmt(n.humidity, "%"), "num humidity"));
      const seen = cell("Last seen", ago(n.age_s), "last-seen");
      if (n.last_seen) seen.title = n.last_seen;
      tr.append(seen);
      tr.append(cell("Readings (24 h)", `${n.readings_24h} of ~${Math.round(DAY_S / n.interval_s)}`, "num"));
      return tr;
    });
    body.replaceChildren(...rows);
    document.getElementById("no-nodes").hidden = report.nodes.length > 0;
    const counts = {};
    for (const n of report.nodes) counts[n.health] = (counts[n.health] || 0) + 1;
    const parts = Object.entries(counts).map(([h, c]) => `${c} ${HEALTH_TEXT[h] || h}`);
    const when = new Date().toLocaleTimeString();
    document.getElementById("summary").textContent =
      `${report.nodes.length} node${report.nodes.length === 1 ? "" : "s"}` +
      (parts.length ? ` · ${parts.join(" · ")}` : "") + ` · updated ${when}` +
      (report.halted_all ? " · all nodes halted" : "");
  }

  // -- the charts ------------------------------------------------------------------------------

  async function updateSeries(name, nowS) {
    let s = series.get(name);
    if (!s) series.set(name, (s = { t: [], temperature: [], humidity: [], last: null }));
    const start = s.last || new Date((nowS - DAY_S) * 1000).toISOString();
    const query = new URLSearchParams({ format: "ndjson", node: name, start });
    const text = await (await read(`/api/readings?${query}`)).text();
    let changed = false;
    for (const line of text.split("\n")) {
      if (!line) continue;
      const r = JSON.parse(line);
      if (s.last && r.time <= s.last) continue; // `start` is inclusive: skip what we have
      s.t.push(seconds(r.time));
      s.temperature.push(r.temperature);
      s.humidity.push(r.humidity);
      s.last = r.time;
      changed = true;
    }
    let old = 0;
    while (old < s.t.length && s.t[old] < nowS - DAY_S) old++;
    if (old) {
      for (const key of ["t", "temperature", "humidity"]) s[key].splice(0, old);
      changed = true;
    }
    return changed;
  }

  function chartOptions(width) {
    return {
      width,
      height: 220,
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: () => [windowEndS - DAY_S, windowEndS] }, // always the last 24 h
        "°C": { range: (u, min, max) => [Math.floor(min - 1), Math.ceil(max + 1)] },
        "%": { range: (u, min, max) => [Math.max(0, Math.floor(min - 5)), Math.min(100, Math.ceil(max + 5))] },
      },
      series: [
        {},
        { label: "Temperature", scale: "°C", stroke: "#d9480f", width: 2, value: (u, v) => fmt(v, "°C") },
        { label: "Humidity", scale: "%", stroke: "#1c7ed6", width: 2, value: (u, v) => fmt(v, "%") },
      ],
      axes: [
        {},
        { scale: "°C", values: (u, vals) => vals.map((v) => `${v}°`), size: 48 },
        { scale: "%", side: 1, grid: { show: false }, values: (u, vals) => vals.map((v) => `${v}%`), size: 48 },
      ],
    };
  }

  function renderChart(node) {
    const s = series.get(node.name);
    let chart = charts.get(node.name);
    if (!chart) {
      const box = document.createElement("div");
      box.className = "chart";
      box.dataset.node = node.name;
      const title = document.createElement("h3");
      title.textContent = node.name;
      box.append(title);
      document.getElementById("charts").append(box);
      chart = { box, title, plot: null, empty: null };
      charts.set(node.name, chart);
    }
    chart.title.replaceChildren(node.name, healthBadge(node.health));
    if (!s.t.length) {
      if (!chart.empty) {
        chart.empty = document.createElement("p");
        chart.empty.className = "empty";
        chart.empty.textContent = "no readings in the last 24 hours";
        chart.box.append(chart.empty);
      }
      if (chart.plot) chart.plot.setData([[], [], []]);
      return;
    }
    if (chart.empty) {
      chart.empty.remove();
      chart.empty = null;
    }
    const data = [s.t, s.temperature, s.humidity];
    if (!chart.plot) {
      chart.plot = new uPlot(chartOptions(chart.box.clientWidth - 16), data, chart.box);
      new ResizeObserver(() => chart.plot.setSize({ width: chart.box.clientWidth - 16, height: 220 })).observe(chart.box);
    } else {
      chart.plot.setData(data);
    }
  }

  // -- the loop --------------------------------------------------------------------------------

  async function refresh() {
    const report = await (await read("/api/nodes")).json();
    renderTable(report);
    const nowS = seconds(report.time);
    windowEndS = nowS;
    const names = new Set(report.nodes.map((n) => n.name));
    for (const [name, chart] of charts) {
      if (!names.has(name)) {
        chart.box.remove();
        charts.delete(name);
        series.delete(name);
      }
    }
    await Promise.all(report.nodes.map((n) => updateSeries(n.name, nowS)));
    for (const n of report.nodes) renderChart(n);
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }

  async function loop() {
    try {
      await refresh();
    } catch (err) {
      document.getElementById("summary").textContent = `cannot reach the service (${err.message}); retrying`;
    }
    setTimeout(loop, REFRESH_MS);
  }

  loop();
})();
