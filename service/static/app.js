// tswarm status page: a table of nodes and a card per node (latest values as text, a chart of
// the last 24 hours), refreshed without reloading. Reads /api/nodes and /api/readings like any
// reader: the reader cookie that `/?token=...` set, or, when the service answers 401, a token
// asked for once and kept in localStorage. `?refresh=SECONDS` sets the refresh period.
// Dates, times and numbers follow the browser's language (Intl). Battery voltage and Wi-Fi signal
// are those of each node's newest reading (nodes that send them); a low battery (below
// TSWARM_BATTERY_LOW_V, as /api/nodes judges it) is marked in colour and in words.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = Math.max(1, Number(params.get("refresh")) || 30) * 1000;
  const DAY_S = 86400;
  const MIN_SPAN_S = 600; // a chart shows at least ten minutes, at most a day
  const TOKEN_KEY = "tswarm.readToken";
  const HEALTH_TEXT = { ok: "ok", late: "late", silent: "silent", halted: "halted", never: "never seen" };
  const COLORS = { temperature: "#d9480f", humidity: "#1c7ed6" };

  // -- the browser's language ---------------------------------------------------------------

  const LANG = (navigator.languages && navigator.languages[0]) || navigator.language || undefined;
  const oneDecimal = new Intl.NumberFormat(LANG, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const axisNumber = new Intl.NumberFormat(LANG, { maximumFractionDigits: 1 });
  const twoDecimals = new Intl.NumberFormat(LANG, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const whole = new Intl.NumberFormat(LANG, { maximumFractionDigits: 0 });
  const hourMinute = new Intl.DateTimeFormat(LANG, { hour: "numeric", minute: "2-digit" });
  const hourMinuteSecond = new Intl.DateTimeFormat(LANG, { hour: "numeric", minute: "2-digit", second: "2-digit" });
  const dayMonth = new Intl.DateTimeFormat(LANG, { day: "numeric", month: "short" });
  const dateTime = new Intl.DateTimeFormat(LANG, { dateStyle: "medium", timeStyle: "medium" });

  const fmt = (v, unit) => (v == null ? "–" : `${oneDecimal.format(v)} ${unit}`);

  const series = new Map(); // node name -> {t: [], temperature: [], humidity: [], last: "RFC 3339" | null}
  const cards = new Map(); // node name -> {box, title, latest, count, telemetry, firmware, plotBox, plot, empty, node}
  let windowEndS = Date.now() / 1000; // the service's "now" at the last refresh

  // -- talking to the service ---------------------------------------------------------------

  class Unauthorized extends Error {}

  async function get(path) {
    const token = localStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const resp = await fetch(path, { headers, cache: "no-store", credentials: "same-origin" });
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

  const expected24h = (n) => `${n.readings_24h} of ~${Math.round(DAY_S / n.interval_s)}`;

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

  // The node's over-the-air update: the version it runs (as it last reported) and how the last one went.
  const OUTCOME_TEXT = { current: "", pending: "update pending", updated: "updated", rolled_back: "rolled back from" };

  function firmwareParts(fw) {
    const parts = [];
    if (!fw || (fw.running == null && fw.staged == null)) return parts;
    const running = document.createElement("span");
    running.className = "version";
    running.textContent = fw.running == null ? "version not reported" : fw.running;
    parts.push(running);
    if (fw.outcome !== "current") {
      const outcome = document.createElement("span");
      outcome.className = `outcome ${fw.outcome}`;
      let text = OUTCOME_TEXT[fw.outcome] || fw.outcome;
      if (fw.outcome === "pending") text += ` (${fw.staged})`;
      if (fw.outcome === "rolled_back") text += ` ${fw.rolled_back_from}`;
      if (fw.outcome_at) text += ` ${dateTime.format(new Date(seconds(fw.outcome_at) * 1000))}`;
      outcome.textContent = text;
      outcome.title = fw.summary;
      parts.push(outcome);
    }
    return parts;
  }

  // The node's battery (its newest reading's vbat): "3.71 V", and when low a "low" flag beside it.
  function batteryParts(n, label) {
    if (n.vbat == null) return [];
    const volts = span(n.battery_low ? "battery low" : "battery", `${label}${twoDecimals.format(n.vbat)} V`);
    if (n.battery_low) {
      volts.title = "battery low";
      volts.append(document.createTextNode(" "), span("flag", "low"));
    }
    return [volts];
  }

  const signalText = (n) => (n.rssi == null ? "–" : `${whole.format(n.rssi)} dBm`);

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
      const battery = cell("Battery", n.vbat == null ? "–" : "", n.battery_low ? "num battery low" : "num battery");
      battery.append(...batteryParts(n, ""));
      tr.append(battery);
      tr.append(cell("Signal", signalText(n), "num signal"));
      const seen = cell("Last seen", ago(n.age_s), "last-seen");
      if (n.last_seen) seen.title = dateTime.format(new Date(seconds(n.last_seen) * 1000));
      tr.append(seen);
      tr.append(cell("Readings (24 h)", expected24h(n), "num"));
      const firmware = cell("Firmware", "", "firmware");
      firmware.dataset.outcome = n.firmware ? n.firmware.outcome : "current";
      firmware.append(...firmwareParts(n.firmware));
      tr.append(firmware);
      return tr;
    });
    body.replaceChildren(...rows);
    document.getElementById("overview").hidden = report.nodes.length === 0;
    document.getElementById("no-nodes").hidden = report.nodes.length > 0;
    const counts = {};
    for (const n of report.nodes) counts[n.health] = (counts[n.health] || 0) + 1;
    const parts = Object.entries(counts).map(([h, c]) => `${c} ${HEALTH_TEXT[h] || h}`);
    const when = hourMinuteSecond.format(new Date());
    document.getElementById("summary").textContent =
      `${report.nodes.length} node${report.nodes.length === 1 ? "" : "s"}` +
      (parts.length ? ` · ${parts.join(" · ")}` : "") + ` · updated ${when}` +
      (report.halted_all ? " · all nodes halted" : "");
  }

  // -- the cards -------------------------------------------------------------------------------

  // A node's series, read on from its newest point. A reading kept on the node through an outage
  // arrives later with an older time, behind that point: when the node counts more readings in 24 h
  // than the series holds, its day is read again.
  async function updateSeries(name, nowS, readings24h) {
    let s = series.get(name);
    if (!s || readings24h > s.t.length) series.set(name, (s = { t: [], temperature: [], humidity: [], last: null }));
    const start = s.last || new Date((nowS - DAY_S) * 1000).toISOString();
    const query = new URLSearchParams({ format: "ndjson", node: name, start });
    const text = await (await read(`/api/readings?${query}`)).text();
    for (const line of text.split("\n")) {
      if (!line) continue;
      const r = JSON.parse(line);
      if (s.last && r.time <= s.last) continue; // `start` is inclusive: skip what we have
      s.t.push(seconds(r.time));
      s.temperature.push(r.temperature);
      s.humidity.push(r.humidity);
      s.last = r.time;
    }
    let old = 0;
    while (old < s.t.length && s.t[old] < nowS - DAY_S) old++;
    if (old) for (const key of ["t", "temperature", "humidity"]) s[key].splice(0, old);
  }

  // The x range fits the data: minutes of it fill the chart; a day of it shows the day.
  function xRange(ts) {
    const span = ts.length ? windowEndS - ts[0] : DAY_S;
    const shown = Math.min(DAY_S, Math.max(MIN_SPAN_S, span * 1.04));
    return [windowEndS - shown, windowEndS];
  }

  function timeTicks(u, splits, axisIdx, foundSpace, foundIncr) {
    const clock = foundIncr < 60 ? hourMinuteSecond : hourMinute;
    let day = null;
    return splits.map((s) => {
      const d = new Date(s * 1000);
      const label = clock.format(d);
      const thisDay = d.toDateString();
      if (thisDay === day) return label;
      day = thisDay;
      return label + "\n" + dayMonth.format(d); // the date under the first tick of each day
    });
  }

  function chartOptions(width, card) {
    return {
      width,
      height: 200,
      legend: { show: false }, // the card's text line is the legend, and shows the hovered point
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: (u) => xRange(u.data[0]) },
        "°C": { range: (u, min, max) => [Math.floor(min - 1), Math.ceil(max + 1)] },
        "%": { range: (u, min, max) => [Math.max(0, Math.floor(min - 5)), Math.min(100, Math.ceil(max + 5))] },
      },
      series: [
        {},
        { label: "Temperature", scale: "°C", stroke: COLORS.temperature, width: 2 },
        { label: "Humidity", scale: "%", stroke: COLORS.humidity, width: 2 },
      ],
      axes: [
        { values: timeTicks, space: 60 },
        { scale: "°C", values: (u, vals) => vals.map((v) => `${axisNumber.format(v)}°`), size: 56 },
        { scale: "%", side: 1, grid: { show: false }, values: (u, vals) => vals.map((v) => `${axisNumber.format(v)} %`), size: 60 },
      ],
      hooks: { setCursor: [(u) => showValues(card, u.cursor.idx)] },
    };
  }

  function span(className, text) {
    const el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    return el;
  }

  // The card's line of text: the latest reading and its age, or the hovered point and its time.
  function showValues(card, idx) {
    const n = card.node;
    const s = series.get(n.name);
    if (idx != null && s && idx < s.t.length) {
      card.latest.replaceChildren(
        span("temperature", fmt(s.temperature[idx], "°C")), span("humidity", fmt(s.humidity[idx], "%")),
        span("age", dateTime.format(new Date(s.t[idx] * 1000))),
      );
      card.latest.dataset.hover = "1";
      return;
    }
    delete card.latest.dataset.hover;
    if (n.last_seen == null) {
      card.latest.replaceChildren(span("none", "no readings yet"));
      return;
    }
    const age = span("age", ago(n.age_s));
    age.title = dateTime.format(new Date(seconds(n.last_seen) * 1000));
    card.latest.replaceChildren(span("temperature", fmt(n.temperature, "°C")), span("humidity", fmt(n.humidity, "%")), age);
  }

  function newCard(name) {
    const box = document.createElement("article");
    box.className = "chart";
    box.dataset.node = name;
    const title = document.createElement("h3");
    const latest = document.createElement("p");
    latest.className = "latest";
    const count = document.createElement("p");
    count.className = "count";
    const telemetry = document.createElement("p");
    telemetry.className = "telemetry";
    const firmware = document.createElement("p");
    firmware.className = "firmware";
    const plotBox = document.createElement("div");
    plotBox.className = "plot";
    box.append(title, latest, count, telemetry, firmware, plotBox);
    document.getElementById("charts").append(box);
    const card = { box, title, latest, count, telemetry, firmware, plotBox, plot: null, empty: null, node: null };
    new ResizeObserver(() => {
      if (card.plot) card.plot.setSize({ width: plotBox.clientWidth, height: 200 });
    }).observe(plotBox);
    cards.set(name, card);
    return card;
  }

  // The card's line of telemetry: battery (low marked), signal and how long the last wake took.
  function telemetryParts(n) {
    const parts = batteryParts(n, "battery ");
    if (n.rssi != null) parts.push(span("signal", `signal ${signalText(n)}`));
    if (n.awake_ms != null) parts.push(span("awake", `awake ${oneDecimal.format(n.awake_ms / 1000)} s`));
    return parts;
  }

  function renderCard(node) {
    const s = series.get(node.name);
    const card = cards.get(node.name) || newCard(node.name);
    card.node = node;
    card.box.dataset.health = node.health;
    card.title.replaceChildren(span("name", node.name), healthBadge(node.health));
    if (!card.latest.dataset.hover) showValues(card, null);
    card.count.textContent = node.last_seen == null ? "" : `${expected24h(node)} readings in 24 h`;
    card.telemetry.replaceChildren(...telemetryParts(node));
    card.firmware.replaceChildren(...firmwareParts(node.firmware));
    const hasData = s.t.length > 0;
    card.box.classList.toggle("small", !hasData);
    if (!hasData) {
      if (card.plot) {
        card.plot.destroy();
        card.plot = card.plotBox.uplot = null;
      }
      if (node.last_seen != null && !card.empty) {
        card.empty = document.createElement("p");
        card.empty.className = "empty";
        card.empty.textContent = "no readings in the last 24 hours";
        card.box.append(card.empty);
      }
      return;
    }
    if (card.empty) {
      card.empty.remove();
      card.empty = null;
    }
    const data = [s.t, s.temperature, s.humidity];
    if (!card.plot) {
      card.plot = new uPlot(chartOptions(card.plotBox.clientWidth, card), data, card.plotBox);
      card.plotBox.uplot = card.plot; // for the browser tests (and the curious: $0.uplot in devtools)
    } else {
      card.plot.setData(data);
    }
  }

  // -- the loop --------------------------------------------------------------------------------

  async function refresh() {
    const report = await (await read("/api/nodes")).json();
    renderTable(report);
    const nowS = seconds(report.time);
    windowEndS = nowS;
    const names = new Set(report.nodes.map((n) => n.name));
    for (const [name, card] of cards) {
      if (!names.has(name)) {
        if (card.plot) card.plot.destroy();
        card.box.remove();
        cards.delete(name);
        series.delete(name);
      }
    }
    await Promise.all(report.nodes.map((n) => updateSeries(n.name, nowS, n.readings_24h)));
    for (const n of report.nodes) renderCard(n);
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
