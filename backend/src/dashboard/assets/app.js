// mota dashboard: reads the /v1 API with the operator's bearer token and renders it.
//
// Rules this file keeps: every string from the API reaches the DOM as text (textContent
// or an attribute value set through setAttribute), never as markup; nothing is loaded
// from another origin; the token lives in sessionStorage only and leaves the address bar
// as soon as it is read. Elements tests rely on carry ids and data- attributes.

const TOKEN_KEY = "mota.token";
const REFRESH_MS = 2000;
const PAGE = 500;

// Attempt states, in the order a device passes them, then the outcomes.
const STATES = [
  "pending", "offered", "accepted", "downloading", "verified", "validated",
  "committed", "skipped", "incompatible", "rejected", "reverted", "timed_out", "cancelled", "rolling_back",
  "rolled_back", "rollback_failed", "superseded",
];
const UNSETTLED = new Set(["pending", "offered", "accepted", "downloading", "verified", "validated", "timed_out", "rolling_back"]);
const ENDED = new Set(["completed", "aborted", "rolled_back"]);

// ---------------------------------------------------------------- DOM helpers

const SVG_NS = "http://www.w3.org/2000/svg";

// Element `tag` with attributes (null/undefined/false skipped) and children (strings
// become text nodes: the only way API data enters the page).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

// A column header; `#Name` is a numeric (right-aligned) column.
const th = (t) => (t.startsWith("#") ? h("th", { class: "num" }, t.slice(1)) : h("th", {}, t));

function pad(n) {
  return String(n).padStart(2, "0");
}

// Unix milliseconds as local `YYYY-MM-DD HH:MM:SS`.
function time(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function ago(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function num(v, digits = 1) {
  if (v === null || v === undefined) return "—";
  return Number.isInteger(v) ? String(v) : v.toFixed(digits);
}

function badge(state, kind = "state") {
  return h("span", { class: `badge ${kind}-${state}`, "data-state": state }, state.replace(/_/g, " "));
}

function mean(values) {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

// ---------------------------------------------------------------- token and API

class AuthError extends Error {}

let token = null;

// `#token=T` (optionally `&view=/rollouts/7`, the view last and taken whole) is kept in
// sessionStorage and removed from the address bar.
function takeToken() {
  const fragment = location.hash.replace(/^#/, "");
  if (!fragment.startsWith("token=")) return;
  const decode = (v) => {
    try {
      return decodeURIComponent(v);
    } catch {
      return "";
    }
  };
  const at = fragment.indexOf("&view=");
  const value = decode(at < 0 ? fragment.slice(6) : fragment.slice(6, at));
  const wanted = at < 0 ? "" : decode(fragment.slice(at + 6));
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  const view = wanted.startsWith("/") ? wanted : "/rollouts";
  history.replaceState(null, "", `${location.pathname}${location.search}#${view}`);
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
  if (response.status === 401) throw new AuthError(message);
  if (!response.ok) throw new Error(`${path}: ${message}`);
  return body;
}

// Every item of a keyset-paged list.
async function all(path) {
  const items = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=${PAGE}${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...page.items);
    if (!page.next) return items;
    after = page.next;
  }
}

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  stopRefresh();
  $("view").replaceChildren();
  $("login").hidden = false;
  $("signout").hidden = true;
  $("who").textContent = "";
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  setStatus("idle", "Not signed in");
  $("token").focus();
}

async function signIn() {
  token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    showLogin(null);
    return;
  }
  try {
    const me = await api("/v1/whoami");
    $("login").hidden = true;
    $("signout").hidden = false;
    $("who").textContent = `role: ${me.role}`;
    $("who").dataset.role = me.role;
    route();
  } catch (e) {
    if (e instanceof AuthError) {
      showLogin(e.message);
    } else {
      setStatus("error", `${e.message}; retrying`);
      setTimeout(signIn, REFRESH_MS);
    }
  }
}

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

// ---------------------------------------------------------------- routing and refresh

let current = null; // { key, update } of the mounted view
let timer = null;
let generation = 0;

function parseRoute() {
  const raw = location.hash.replace(/^#/, "") || "/rollouts";
  const [path, query = ""] = raw.split("?", 2);
  const params = new URLSearchParams(query);
  let m;
  if ((m = path.match(/^\/rollouts\/(\d+)$/))) return { view: rolloutView, arg: Number(m[1]), nav: "rollouts" };
  if ((m = path.match(/^\/devices\/([A-Za-z0-9._-]{1,64})$/))) return { view: deviceView, arg: m[1], nav: "devices" };
  if (path === "/devices") return { view: devicesView, arg: params, nav: "devices" };
  return { view: rolloutsView, arg: null, nav: "rollouts" };
}

function route() {
  if (!token) return;
  stopRefresh();
  generation += 1;
  const r = parseRoute();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.nav === r.nav);
  }
  const root = $("view");
  root.replaceChildren();
  current = r.view(root, r.arg);
  tick();
}

function stopRefresh() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

async function tick() {
  stopRefresh();
  if (!current || !token) return;
  const mine = generation;
  // A hidden tab is not refreshed, but a view is always rendered once.
  if (document.visibilityState === "visible" || !current.rendered) {
    try {
      await current.update(() => mine === generation);
      if (mine !== generation) return;
      current.rendered = true;
      setStatus("ok", `Updated ${time(Date.now()).slice(11)} · every ${REFRESH_MS / 1000} s while visible`);
    } catch (e) {
      if (mine !== generation) return;
      if (e instanceof AuthError) {
        showLogin(e.message);
        return;
      }
      setStatus("error", e.message);
    }
  }
  if (mine === generation) timer = setTimeout(tick, REFRESH_MS);
}

// ---------------------------------------------------------------- rollouts list

function rolloutsView(root) {
  const body = h("tbody", { id: "rollouts-body" });
  const more = h("p", { class: "muted", hidden: true }, "The newest 100 rollouts; older ones: GET /v1/rollouts?after=…");
  root.append(
    h("div", { class: "title" }, h("h1", {}, "Rollouts")),
    h("table", { id: "rollouts", class: "grid" },
      h("thead", {}, h("tr", {},
        ["#Id", "Model", "Version", "State", "#Cohorts passed", "#Devices committed", "Created"].map(th))),
      body),
    more,
  );
  return {
    async update(live) {
      const { items, next } = await api("/v1/rollouts?limit=100");
      if (!live()) return;
      more.hidden = !next;
      body.replaceChildren(...items.map(rolloutRow));
      if (!items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No rollouts yet.")));
    },
  };
}

function rolloutRow(r) {
  const passed = r.cohorts.filter((c) => c.state === "passed").length;
  const committed = r.cohorts.reduce((a, c) => a + c.tally.committed, 0);
  const size = r.cohorts.reduce((a, c) => a + c.size, 0);
  const href = `#/rollouts/${r.id}`;
  return h("tr", { id: `rollout-${r.id}`, "data-rollout": r.id, "data-state": r.state },
    h("td", { class: "num" }, h("a", { href }, String(r.id))),
    h("td", {}, r.model),
    h("td", {}, r.version),
    h("td", {}, badge(r.state), r.awaiting_approval ? badge("awaiting_approval", "flag") : null,
      r.reason ? h("div", { class: "reason" }, r.reason) : null),
    h("td", { class: "num", "data-cohorts-passed": passed, "data-cohorts": r.cohorts.length }, `${passed} / ${r.cohorts.length}`),
    h("td", { class: "num", "data-committed": committed, "data-devices": size }, `${committed} / ${size}`),
    h("td", { title: time(r.created_at) }, time(r.created_at)),
  );
}

// ---------------------------------------------------------------- one rollout

function rolloutView(root, id) {
  const head = h("div", { id: "rollout-head" });
  const cohorts = h("div", { id: "cohorts" });
  root.append(h("p", { class: "crumbs" }, h("a", { href: "#/rollouts" }, "Rollouts"), " / ", `Rollout ${id}`), head, cohorts);
  let attempts = null;
  let ticks = 0;
  return {
    async update(live) {
      const r = await api(`/v1/rollouts/${id}`);
      // Attempts are paged and may be many: fetched every tick while any is unsettled,
      // else every fifth.
      const unsettled = !attempts || attempts.some((a) => UNSETTLED.has(a.state)) || !ENDED.has(r.state);
      if (unsettled || ticks % 5 === 0) attempts = await all(`/v1/rollouts/${id}/devices`);
      ticks += 1;
      if (!live()) return;
      head.replaceChildren(...rolloutHeader(r));
      cohorts.replaceChildren(...r.cohorts.map((c) => cohortCard(r, c, attempts.filter((a) => a.cohort === c.position))));
    },
  };
}

function planText(plan) {
  const steps = plan.cohorts.map((c) => ("percent" in c ? `${c.percent} %` : `+${c.count}`)).join(" → ");
  const extra = [];
  if (plan.canary && plan.canary.length) extra.push(`${plan.canary.length} canar${plan.canary.length === 1 ? "y" : "ies"}`);
  if (plan.approval) extra.push("approval between cohorts");
  if (plan.seed) extra.push(`seed ${plan.seed}`);
  return extra.length ? `${steps} (${extra.join(", ")})` : steps;
}

function selectorText(sel) {
  const parts = [];
  parts.push(`class ${sel.class || "of the model"}`);
  if (sel.tags && sel.tags.length) parts.push(`tags ${sel.tags.join(", ")}`);
  if (sel.ids && sel.ids.length) parts.push(`${sel.ids.length} listed device${sel.ids.length === 1 ? "" : "s"}`);
  return parts.join("; ");
}

function gatesText(g) {
  const parts = [`min ${g.min_reports} reports`, `failures ≤ ${g.max_failure_permille} ‰`];
  if (g.min_accuracy_permille !== null && g.min_accuracy_permille !== undefined) parts.push(`accuracy ≥ ${g.min_accuracy_permille} ‰`);
  if (g.max_accuracy_drop_permille !== null && g.max_accuracy_drop_permille !== undefined) parts.push(`drop ≤ ${g.max_accuracy_drop_permille} ‰`);
  if (g.max_latency_increase_permille !== null && g.max_latency_increase_permille !== undefined) parts.push(`latency increase ≤ ${g.max_latency_increase_permille} ‰`);
  if (g.soak_s) parts.push(`soak ${g.soak_s} s`);
  if (g.stuck_timeout_s) parts.push(`stuck after ${g.stuck_timeout_s} s`);
  if (g.on_failure) parts.push(`on failure: ${g.on_failure}`);
  return parts.join(" · ");
}

function rolloutHeader(r) {
  const dl = h("dl", { class: "facts" });
  const fact = (label, ...value) => dl.append(h("dt", {}, label), h("dd", {}, ...value));
  fact("State", h("span", { id: "rollout-state", "data-state": r.state }, badge(r.state)),
    r.awaiting_approval ? h("span", { id: "awaiting-approval" }, badge("awaiting_approval", "flag")) : null);
  if (r.reason) fact("Reason", h("span", { id: "rollout-reason" }, r.reason));
  fact("Selector", h("span", { id: "rollout-selector" }, selectorText(r.selector)));
  fact("Plan", h("span", { id: "rollout-plan" }, planText(r.plan)));
  fact("Gates", h("span", { id: "rollout-gates" }, gatesText(r.gates)));
  fact("Created", `${time(r.created_at)} by `, r.created_by);
  fact("Updated", time(r.updated_at));
  return [
    h("div", { class: "title" }, h("h1", { id: "rollout-title", "data-rollout": r.id },
      `Rollout ${r.id}: `, r.model, " ", r.version)),
    dl,
  ];
}

// Progress segments, in bar order: [key, label, count].
function segments(t) {
  return [
    ["committed", "committed", t.committed],
    ["skipped", "skipped", t.skipped],
    ["in_progress", "in progress", t.in_progress],
    ["offline", "waiting: offline", t.offline],
    ["incompatible", "incompatible", t.incompatible],
    ["failed", "failed", t.rejected + (t.reverted || 0) + t.timed_out],
    ["other", "cancelled / rolled back", t.other],
    ["pending", "pending", t.pending],
  ];
}

function progressBar(c) {
  const total = Math.max(c.size, 1);
  const svg = s("svg", { class: "progress", viewBox: "0 0 1000 16", preserveAspectRatio: "none", role: "img",
    "aria-label": `cohort ${c.position + 1} progress` });
  let x = 0;
  for (const [key, label, n] of segments(c.tally)) {
    if (!n) continue;
    const w = (n * 1000) / total;
    svg.append(s("rect", { class: `seg seg-${key}`, x: x.toFixed(2), y: 0, width: w.toFixed(2), height: 16, "data-segment": key, "data-count": n },
      s("title", {}, `${n} ${label}`)));
    x += w;
  }
  const legend = h("div", { class: "legend" });
  for (const [key, label, n] of segments(c.tally)) {
    legend.append(h("span", { class: "key", "data-segment": key, "data-count": n }, h("i", { class: `swatch seg-${key}` }), `${n} ${label}`));
  }
  legend.append(h("span", { class: "key total" }, `of ${c.size}`));
  return h("div", { class: "bar" }, svg, legend);
}

const GATE_UNITS = {
  failure_rate: ["Failure rate", "‰", "≤"],
  min_accuracy: ["Mean accuracy", "‰", "≥"],
  accuracy_drop: ["Mean accuracy drop", "‰", "≤"],
  latency_increase: ["Mean latency increase", "‰", "≤"],
  min_reports: ["Reports", "", "≥"],
};

function gateTable(c) {
  const body = h("tbody", {});
  for (const g of c.gates) {
    const [label, unit, op] = GATE_UNITS[g.gate] || [g.gate, "", ""];
    const verdict = g.holds === true ? "holds" : g.holds === false ? "broken" : "not judged";
    const key = g.holds === true ? "holds" : g.holds === false ? "broken" : "pending";
    body.append(h("tr", { class: "gate", "data-gate": g.gate, "data-verdict": key },
      h("td", {}, label, h("span", { class: "code" }, g.gate)),
      h("td", { class: "num" }, `${op} ${num(g.limit)}${unit ? ` ${unit}` : ""}`),
      h("td", { class: "num", "data-value": g.value === null || g.value === undefined ? "" : g.value },
        g.value === null || g.value === undefined ? "—" : `${num(g.value)}${unit ? ` ${unit}` : ""}`),
      h("td", {}, h("span", { class: `verdict verdict-${key}` }, verdict)),
    ));
  }
  return h("table", { class: "grid gates" },
    h("thead", {}, h("tr", {}, ["Gate", "#Limit", "#Value", "Verdict"].map(th))), body);
}

function outcomeTable(attempts) {
  const counts = new Map();
  for (const a of attempts) counts.set(a.state, (counts.get(a.state) || 0) + 1);
  const states = h("ul", { class: "counts", "data-outcomes": "" });
  for (const st of STATES) {
    if (!counts.has(st)) continue;
    states.append(h("li", { "data-attempt-state": st, "data-count": counts.get(st) }, badge(st), h("b", {}, String(counts.get(st)))));
  }
  for (const [st, n] of counts) {
    if (!STATES.includes(st)) states.append(h("li", { "data-attempt-state": st, "data-count": n }, badge(st), h("b", {}, String(n))));
  }
  const patch = attempts.filter((a) => a.delta === true).length;
  const full = attempts.filter((a) => a.delta === false).length;
  const none = attempts.length - patch - full;
  const images = h("ul", { class: "counts images" },
    h("li", { "data-image": "patch", "data-count": patch }, "patch ", h("b", {}, String(patch))),
    h("li", { "data-image": "full", "data-count": full }, "full image ", h("b", {}, String(full))),
    none ? h("li", { "data-image": "none", "data-count": none }, "not offered ", h("b", {}, String(none))) : null);
  return h("div", { class: "outcomes" }, h("h4", {}, "Devices by state"), states, h("h4", {}, "Offered as"), images);
}

// An SVG histogram of `values` (integers), with the previous model's mean marked.
function histogram(kind, title, unit, values, prevMean) {
  const W = 420, H = 150, L = 34, R = 10, T = 18, B = 28;
  const svg = s("svg", { class: "histogram", viewBox: `0 0 ${W} ${H}`, role: "img", "data-histogram": kind,
    "data-n": values.length, "data-prev-mean": prevMean === null ? "" : prevMean.toFixed(1), "aria-label": title });
  if (!values.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no reports yet"));
    return h("figure", { class: "hist" }, h("figcaption", {}, title), svg);
  }
  // Integer data: each value owns [v - 0.5, v + 0.5), bins are whole units wide, and at
  // least 11 units are shown, so a single value is a bar centred on it.
  let min = Math.min(...values), max = Math.max(...values);
  if (prevMean !== null) { min = Math.min(min, Math.floor(prevMean)); max = Math.max(max, Math.ceil(prevMean)); }
  const grow = Math.max(0, 11 - (max - min + 1));
  min -= Math.floor(grow / 2); max += Math.ceil(grow / 2);
  const target = Math.min(20, Math.max(5, Math.ceil(Math.sqrt(values.length)) * 2));
  const span = max - min + 1;
  const width = span <= 20 ? 1 : Math.ceil(span / target);
  const bins = Math.ceil(span / width);
  const lo = min - 0.5, hi = lo + bins * width;
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / width)))] += 1;
  const top = Math.max(...counts);
  const x = (v) => L + ((v - lo) / (hi - lo)) * (W - L - R);
  const y = (n) => H - B - (n / top) * (H - B - T);
  svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  counts.forEach((n, i) => {
    if (!n) return;
    const a = lo + i * width, b = a + width;
    const [first, last] = [Math.ceil(a), Math.ceil(b) - 1];
    svg.append(s("rect", { class: "hbar", x: (x(a) + 0.5).toFixed(1), y: y(n).toFixed(1), width: Math.max(1, x(b) - x(a) - 1).toFixed(1),
      height: (H - B - y(n)).toFixed(1), "data-from": first, "data-to": last, "data-count": n },
      s("title", {}, `${first === last ? first : `${first}–${last}`} ${unit}: ${n} device${n === 1 ? "" : "s"}`)));
  });
  svg.append(s("text", { class: "tick", x: L, y: H - B + 14, "text-anchor": "start" }, `${min} ${unit}`));
  svg.append(s("text", { class: "tick", x: W - R, y: H - B + 14, "text-anchor": "end" }, `${Math.ceil(hi) - 1} ${unit}`));
  svg.append(s("text", { class: "tick", x: L - 4, y: T + 4, "text-anchor": "end" }, String(top)));
  svg.append(s("text", { class: "tick", x: L - 4, y: H - B, "text-anchor": "end" }, "0"));
  const m = mean(values);
  svg.append(s("line", { class: "mean-new", x1: x(m).toFixed(1), y1: T - 6, x2: x(m).toFixed(1), y2: H - B, "data-mean": m.toFixed(1) },
    s("title", {}, `new model mean ${m.toFixed(1)} ${unit}`)));
  if (prevMean !== null) {
    const px = x(prevMean).toFixed(1);
    svg.append(s("line", { class: "mean-prev", x1: px, y1: T - 6, x2: px, y2: H - B, "data-prev-mean": prevMean.toFixed(1) },
      s("title", {}, `previous model mean ${prevMean.toFixed(1)} ${unit}`)));
  }
  const legend = h("div", { class: "hist-legend" },
    h("span", {}, h("i", { class: "swatch mean-new" }), `new mean ${m.toFixed(1)} ${unit}`),
    prevMean !== null ? h("span", {}, h("i", { class: "swatch mean-prev" }), `previous mean ${prevMean.toFixed(1)} ${unit}`) : null,
    h("span", {}, `${values.length} device${values.length === 1 ? "" : "s"}`));
  return h("figure", { class: "hist" }, h("figcaption", {}, title), svg, legend);
}

function distributions(attempts) {
  const acc = attempts.filter((a) => a.accuracy_permille !== null && a.accuracy_permille !== undefined);
  const prevAcc = mean(acc.filter((a) => a.prev_accuracy_permille !== null && a.prev_accuracy_permille !== undefined)
    .map((a) => a.prev_accuracy_permille));
  const lat = attempts.filter((a) => a.latency_us !== null && a.latency_us !== undefined);
  const prevLat = mean(lat.filter((a) => a.prev_latency_us !== null && a.prev_latency_us !== undefined).map((a) => a.prev_latency_us));
  return h("div", { class: "dists" },
    histogram("accuracy", "On-device accuracy", "‰", acc.map((a) => a.accuracy_permille), prevAcc),
    histogram("latency", "Inference latency", "µs", lat.map((a) => a.latency_us), prevLat));
}

function cohortCard(r, c, attempts) {
  const when = c.started_at ? `started ${time(c.started_at)}` : "not started";
  const done = c.finished_at ? ` · finished ${time(c.finished_at)}` : "";
  return h("section", { class: "cohort", id: `cohort-${c.position}`, "data-cohort": c.position, "data-state": c.state, "data-size": c.size },
    h("div", { class: "cohort-head" },
      h("h2", {}, `Cohort ${c.position + 1}`), badge(c.state), h("span", { class: "muted" }, `${c.size} devices · ${when}${done}`)),
    c.reason ? h("p", { class: "reason" }, c.reason) : null,
    progressBar(c),
    h("div", { class: "cohort-body" },
      h("div", {}, h("h3", {}, "Gates"), gateTable(c)),
      h("div", {}, h("h3", {}, "Devices"), outcomeTable(attempts)),
    ),
    distributions(attempts),
  );
}

// ---------------------------------------------------------------- devices

function devicesView(root, params) {
  const klass = h("input", { id: "filter-class", name: "class", placeholder: "any", value: params.get("class") || "" });
  const tag = h("input", { id: "filter-tag", name: "tag", placeholder: "any", value: params.get("tag") || "" });
  const model = h("input", { id: "filter-model", name: "model", placeholder: "any", value: params.get("model") || "" });
  const form = h("form", { id: "device-filters", class: "filters" },
    h("label", {}, "Class ", klass), h("label", {}, "Tag ", tag), h("label", {}, "Model ", model),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, el] of [["class", klass], ["tag", tag], ["model", model]]) if (el.value.trim()) q.set(k, el.value.trim());
    const hash = `#/devices${q.toString() ? `?${q}` : ""}`;
    if (location.hash === hash) route();
    else location.hash = hash;
  });
  const body = h("tbody", { id: "devices-body" });
  const pager = h("div", { class: "pager" });
  const stack = []; // cursors of the pages before this one
  let after = null;
  root.append(h("div", { class: "title" }, h("h1", {}, "Devices")), form,
    h("table", { id: "devices", class: "grid" },
      h("thead", {}, h("tr", {}, ["Id", "Class", "Model", "Version", "Online", "Last seen", "Tags"].map(th))),
      body),
    pager);
  const filter = new URLSearchParams();
  for (const k of ["class", "tag", "model"]) if (params.get(k)) filter.set(k, params.get(k));
  const view = {
    async update(live) {
      const q = new URLSearchParams(filter);
      q.set("limit", "100");
      if (after) q.set("after", after);
      const page = await api(`/v1/devices?${q}`);
      if (!live()) return;
      body.replaceChildren(...page.items.map(deviceRow));
      if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No devices match.")));
      const prev = h("button", { type: "button", disabled: !stack.length }, "← Previous");
      const next = h("button", { type: "button", disabled: !page.next }, "Next →");
      prev.addEventListener("click", () => { after = stack.pop() ?? null; tick(); });
      next.addEventListener("click", () => { stack.push(after); after = page.next; tick(); });
      pager.replaceChildren(prev, next);
      pager.hidden = !stack.length && !page.next;
    },
  };
  return view;
}

function deviceRow(d) {
  return h("tr", { id: `device-${d.id}`, "data-device": d.id, "data-online": d.online },
    h("td", {}, h("a", { href: `#/devices/${encodeURIComponent(d.id)}` }, d.id)),
    h("td", {}, d.device_class),
    h("td", {}, d.running_model || "—"),
    h("td", {}, d.running_version || "—"),
    h("td", {}, h("span", { class: d.online ? "dot on" : "dot off" }), d.online ? "online" : "offline"),
    h("td", { title: time(d.last_seen) }, ago(d.last_seen)),
    h("td", {}, d.tags.map((t) => h("span", { class: "tag" }, t))),
  );
}

function deviceView(root, id) {
  const head = h("div", { id: "device-head" });
  const body = h("tbody", { id: "updates-body" });
  root.append(h("p", { class: "crumbs" }, h("a", { href: "#/devices" }, "Devices"), " / ", id), head,
    h("h2", {}, "Updates"),
    h("table", { id: "updates", class: "grid" },
      h("thead", {}, h("tr", {}, ["#Rollout", "Model", "Version", "#Cohort", "State", "Offered as", "#Accuracy", "#Latency", "Updated"]
        .map(th))),
      body));
  return {
    async update(live) {
      const d = await api(`/v1/devices/${encodeURIComponent(id)}`);
      const updates = await api(`/v1/devices/${encodeURIComponent(id)}/updates?limit=100`);
      if (!live()) return;
      const dl = h("dl", { class: "facts" });
      const fact = (label, ...value) => dl.append(h("dt", {}, label), h("dd", {}, ...value));
      fact("Class", d.device_class);
      fact("Running", d.running_model || "—", " ", d.running_version || "");
      fact("Image", h("code", {}, d.running_sha256 || "—"));
      fact("Security counter", String(d.security_counter));
      fact("Agent", d.agent_version || "—");
      fact("Online", h("span", { class: d.online ? "dot on" : "dot off" }), d.online ? "online" : "offline");
      fact("Last seen", `${time(d.last_seen)} (${ago(d.last_seen)})`);
      fact("First seen", time(d.first_seen));
      fact("Tags", d.tags.length ? d.tags.map((t) => h("span", { class: "tag" }, t)) : "—");
      head.replaceChildren(h("div", { class: "title" }, h("h1", { "data-device": d.id }, d.id)), dl);
      body.replaceChildren(...updates.items.map((a) => h("tr", { "data-rollout": a.rollout_id, "data-state": a.state },
        h("td", { class: "num" }, h("a", { href: `#/rollouts/${a.rollout_id}` }, String(a.rollout_id))),
        h("td", {}, a.model), h("td", {}, a.version), h("td", { class: "num" }, String(a.cohort)),
        h("td", {}, badge(a.state), a.error ? h("span", { class: "code", "data-error": a.error }, a.error) : null),
        h("td", {}, a.delta === true ? "patch" : a.delta === false ? "full image" : "—"),
        h("td", { class: "num" }, a.accuracy_permille === null ? "—" : `${a.accuracy_permille} ‰`,
          a.prev_accuracy_permille === null ? "" : ` (was ${a.prev_accuracy_permille})`),
        h("td", { class: "num" }, a.latency_us === null ? "—" : `${a.latency_us} µs`,
          a.prev_latency_us === null ? "" : ` (was ${a.prev_latency_us})`),
        h("td", {}, time(a.updated_at)))));
      if (!updates.items.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No updates yet.")));
    },
  };
}

// ---------------------------------------------------------------- start

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  $("token").value = "";
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  if (!location.hash.startsWith("#/")) history.replaceState(null, "", `${location.pathname}#/rollouts`);
  signIn();
});
$("signout").addEventListener("click", () => showLogin(null));
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#token=")) {
    takeToken();
    signIn();
  } else {
    route();
  }
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && current && token) tick();
});

takeToken();
signIn();
