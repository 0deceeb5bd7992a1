/* Conveyor web console: the console tab (pages, search, live tail) and the scalars tab
   (server-reduced series drawn with uPlot, zoom re-asks the server). Everything from a task
   is inserted as text (textContent), never as HTML. */
"use strict";

const MAX_SHOWN = 20000;

function taskId() {
  const el = document.getElementById("task");
  return el ? el.dataset.task : null;
}

function getJSON(url) {
  return fetch(url, { credentials: "same-origin" }).then((r) => {
    if (!r.ok) { return r.json().then((b) => { throw new Error(b.error || r.statusText); }); }
    return r.json();
  });
}

function openStream(id, after, handlers) {
  const url = `/tasks/${encodeURIComponent(id)}/stream` + (after ? `?after=${after}` : "");
  const source = new EventSource(url);
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
  }
  return source;
}

function updateStatus(status) {
  if (!status) { return; }
  const badge = document.getElementById("task-status");
  if (badge && badge.textContent !== status[0]) {
    badge.textContent = status[0];
    badge.className = `status s-${status[0]}`;
  }
}

/* ---- console ---------------------------------------------------------------------- */
function entryNode(entry) {
  const line = document.createElement("div");
  line.className = "line";
  if (entry.n >= 0) { line.dataset.n = entry.n; }
  line.textContent = entry.text;
  return line;
}

function setupConsole() {
  const pre = document.getElementById("console");
  if (!pre) { return; }
  const id = pre.dataset.task;
  const follow = document.getElementById("console-follow");
  const info = document.getElementById("console-info");
  let offset = 0, total = 0, searching = false;

  function scroll() { if (follow.checked && !searching) { pre.scrollTop = pre.scrollHeight; } }
  function append(entries) {
    if (searching) { return; }
    for (const entry of entries) { pre.appendChild(entryNode(entry)); }
    total += entries.length;
    while (pre.childNodes.length > MAX_SHOWN) { pre.removeChild(pre.firstChild); offset += 1; }
    info.textContent = `${total} entries`;
    scroll();
  }
  function loadTail() {
    searching = false;
    document.getElementById("console-further").hidden = true;
    return getJSON(`/tasks/${encodeURIComponent(id)}/log.json`).then((page) => {
      pre.replaceChildren(...page.entries.map(entryNode));
      offset = page.offset; total = page.total;
      info.textContent = `${total} entries`;
      scroll();
      return page.last_seq;
    });
  }
  document.getElementById("console-earlier").addEventListener("click", () => {
    if (searching || offset === 0) { return; }
    const start = Math.max(0, offset - 500);
    getJSON(`/tasks/${encodeURIComponent(id)}/log.json?offset=${start}&limit=${offset - start}`)
      .then((page) => { pre.prepend(...page.entries.map(entryNode)); offset = start; });
  });
  function search(q, from) {
    getJSON(`/tasks/${encodeURIComponent(id)}/log.json?q=${encodeURIComponent(q)}&from=${from}`)
      .then((found) => {
        if (!searching || from === 0) { pre.replaceChildren(); }
        searching = true;
        pre.append(...found.entries.map(entryNode));
        const further = document.getElementById("console-further");
        further.hidden = found.next === null;
        further.onclick = () => search(q, found.next);
        info.textContent = `${pre.childNodes.length} matching entries` +
          (found.next === null ? "" : ` (searched up to entry ${found.next})`);
      })
      .catch((err) => { info.textContent = err.message; });
  }
  document.getElementById("console-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = document.getElementById("console-q").value;
    if (!q) { loadTail(); return; }
    searching = false;
    search(q, 0);
  });
  document.getElementById("console-clear").addEventListener("click", () => {
    document.getElementById("console-q").value = "";
    loadTail();
  });
  loadTail().then((lastSeq) => openStream(id, lastSeq, { log: append, status: updateStatus }));
}

/* ---- scalars ---------------------------------------------------------------------- */
function smooth(ys, weight) {
  if (!weight) { return ys; }
  let last = null;
  return ys.map((y) => {
    if (y === null) { return null; }
    last = last === null ? y : last * weight + (1 - weight) * y;
    return last;
  });
}

function aligned(series, weight) {
  const xs = [...new Set(series.flatMap((s) => s.x))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  for (const s of series) {
    const ys = new Array(xs.length).fill(null);
    s.x.forEach((x, i) => { ys[index.get(x)] = s.y[i]; });
    data.push(smooth(ys, weight));
  }
  return data;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

class Chart {
  constructor(el, id, src) {
    this.el = el; this.id = id; this.src = src; this.metric = el.dataset.metric;
    this.plot = null; this.range = null; this.loaded = false; this.raw = null;
  }
  url() {
    const axis = document.getElementById("x-axis").value;
    const width = Math.max(200, this.el.querySelector(".plot").clientWidth || 800);
    const base = this.src ? `${this.src}&` : `/tasks/${encodeURIComponent(this.id)}/scalars.json?`;
    let url = `${base}metric=${encodeURIComponent(this.metric)}&width=${width}&x=${axis}`;
    if (this.range) { url += `&xmin=${this.range[0]}&xmax=${this.range[1]}`; }
    return url;
  }
  load() {
    this.loaded = true;
    performance.mark(`chart-load:${this.metric}`);
    return getJSON(this.url()).then((reply) => { this.raw = reply; this.draw(); });
  }
  draw() {
    const weight = Number(document.getElementById("smoothing").value);
    const data = aligned(this.raw.series, weight);
    const holder = this.el.querySelector(".plot");
    const time = this.raw.x === "time";
    if (this.plot && this.plot.series.length === data.length) {
      this.plot.setData(data, !this.range);
      if (this.range) { this.plot.setScale("x", { min: this.range[0], max: this.range[1] }); }
      return;
    }
    if (this.plot) { this.plot.destroy(); }
    const opts = {
      width: Math.max(200, holder.clientWidth || 800), height: 240,
      scales: { x: { time } },
      series: [{}, ...this.raw.series.map((s, i) => ({
        label: s.variant || this.metric, stroke: COLORS[i % COLORS.length], spanGaps: true,
      }))],
      cursor: { drag: { x: true, y: false } },
      // the mark lets bench/web_browser.py time a chart from its request to uPlot's draw
      hooks: { setSelect: [(u) => this.zoom(u)], draw: [() => performance.mark(`chart-drawn:${this.metric}`)] },
    };
    this.plot = new uPlot(opts, data, holder);
    holder.addEventListener("dblclick", () => { this.range = null; this.load(); });
  }
  zoom(u) {
    if (u.select.width < 2) { return; }
    const lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
    u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
    this.range = [lo, hi];
    this.load();
  }
}

function setupScalars() {
  const holder = document.getElementById("charts");
  if (!holder) { return; }
  const id = holder.dataset.task, src = holder.dataset.src;  // a task, or the compare page's tasks
  const charts = [...holder.querySelectorAll(".chart")].map((el) => new Chart(el, id, src));
  const visible = new Set();
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const chart = charts.find((c) => c.el === entry.target);
      if (entry.isIntersecting) { visible.add(chart); if (!chart.loaded) { chart.load(); } }
      else { visible.delete(chart); }
    }
  });
  charts.forEach((c) => observer.observe(c.el));
  document.getElementById("metric-filter").addEventListener("input", (ev) => {
    const text = ev.target.value.toLowerCase();
    charts.forEach((c) => { c.el.hidden = !c.metric.toLowerCase().includes(text); });
  });
  document.getElementById("x-axis").addEventListener("change", () => {
    charts.forEach((c) => { c.range = null; if (c.plot) { c.plot.destroy(); c.plot = null; } c.loaded = false; });
    visible.forEach((c) => c.load());
  });
  document.getElementById("smoothing").addEventListener("input", () => {
    charts.forEach((c) => { if (c.raw) { c.draw(); } });
  });
  if (!id) { return; }
  let lastIteration = null, pending = false;
  openStream(id, null, {
    status: (status) => {
      updateStatus(status);
      if (!status || status[2] === lastIteration) { return; }
      const first = lastIteration === null;
      lastIteration = status[2];
      if (first || pending) { return; }
      pending = true;
      setTimeout(() => { pending = false; visible.forEach((c) => { if (!c.range) { c.load(); } }); }, 1000);
    },
  });
}

function drawPlot(el, id) {
  el.dataset.state = "loading";
  fetch(`/tasks/${encodeURIComponent(id)}/plot.json?seq=${encodeURIComponent(el.dataset.seq)}`,
    { credentials: "same-origin" })
    .then((r) => { if (!r.ok) { throw new Error(`${r.status} ${r.statusText}`); } return r.text(); })
    .then((text) => {
      const figure = JSON.parse(text);
      const layout = Object.assign({}, figure.layout || {}, { autosize: true });
      delete layout.width;
      return window.Plotly.newPlot(el, figure.data || [], layout,
        { responsive: true, displaylogo: false });
    })
    .then(() => { el.dataset.state = "drawn"; })
    .catch((err) => {
      el.dataset.state = "error";
      el.textContent = `this plot cannot be shown: ${err.message}`;
    });
}

function setupPlots() {
  const holder = document.getElementById("plots");
  if (!holder || !window.Plotly) { return; }
  const id = holder.dataset.task;
  // drawn once each, when (nearly) scrolled into view: many plots never freeze the page
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (entry.isIntersecting) { observer.unobserve(entry.target); drawPlot(entry.target, id); }
    }
  }, { rootMargin: "300px" });
  const cards = [...holder.querySelectorAll(".plot-card")];
  cards.forEach((card) => observer.observe(card.querySelector(".plotly-plot")));
  document.getElementById("plot-filter").addEventListener("input", (ev) => {
    const text = ev.target.value.toLowerCase();
    cards.forEach((card) => {
      const name = `${card.dataset.metric} ${card.dataset.variant}`.toLowerCase();
      card.hidden = !name.includes(text);
    });
  });
}

function setupCompare() {
  const box = document.getElementById("only-differences");
  if (!box) { return; }
  box.addEventListener("change", () => {
    document.querySelector(".compare").classList.toggle("only-differences", box.checked);
  });
}

/* ---- workers' machine stats (queues page): the server's last hour of reports ---------- */
const MACHINE_LABELS = { cpu: "CPU %", memory: "memory MB", gpu: "GPU %" };

function setupMachineCharts() {
  for (const holder of document.querySelectorAll(".machine-charts")) {
    const history = JSON.parse(holder.dataset.history || "{}");
    for (const el of holder.querySelectorAll(".machine-chart")) {
      const ys = history[el.dataset.series] || [];
      if (!ys.some((y) => y !== null)) { el.hidden = true; continue; }
      const opts = {
        width: 220, height: 70, legend: { show: false }, cursor: { show: false },
        scales: { x: { time: true } }, axes: [{ show: false }, { size: 56 }],
        series: [{}, { label: MACHINE_LABELS[el.dataset.series], stroke: COLORS[0], spanGaps: true }],
      };
      const last = ys.filter((y) => y !== null).pop();
      const caption = document.createElement("div");
      caption.className = "machine-caption";
      caption.textContent = `${MACHINE_LABELS[el.dataset.series]}: ${Math.round(last)} (last hour)`;
      el.appendChild(caption);
      new uPlot(opts, [history.time, ys], el);
      el.dataset.state = "drawn";
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupConsole(); setupScalars(); setupPlots(); setupCompare(); setupMachineCharts();
});
