// The Breakout portal: reads breakout snapshots from the read API and shows them, with the
// selection's trend (trend.js) and the SIP codes behind it (causes.js).
//
// Plain browser JavaScript, no build step, no dependency. Money, percentages and
// durations arrive as exact decimal strings and are only ever formatted as strings
// (format.js): nothing here turns a charge into a float, for display, sorting or CSV.

import { csvCell } from "./csv-cells.js";
import { renderCauses, periodText } from "./causes.js";
import { DASH, compareDecimal, escapeHtml, formatDecimal, formatDuration, formatInt, formatMoney, formatPct, minorDigits, minutesOf, parseDecimal, roundDecimal } from "./format.js";
import { RESOLUTIONS, TREND_METRICS, TrendChart, autoResolution } from "./trend.js";

const KEY_STORAGE = "breakout.apiKey";
const AUTO_REFRESH_MS = 30_000;
const ROW_LIMIT = 10_000; // the API's maximum page
const GROUP_KEYS = ["customer", "destination", "provider"];
const TIME_ZONES = [
  "UTC",
  "Europe/London",
  "Europe/Paris",
  "Europe/Berlin",
  "Africa/Johannesburg",
  "Asia/Dubai",
  "Asia/Kolkata",
  "Asia/Singapore",
  "Asia/Tokyo",
  "Australia/Sydney",
  "America/New_York",
  "America/Chicago",
  "America/Los_Angeles",
  "America/Sao_Paulo",
];

// kind: text | int | pct (percent string) | dur (seconds string, as m:ss) | sec (seconds string, as
// given) | dec (decimal string) | money (decimal string)
const COLUMNS = {
  customer: { label: "Customer", kind: "text" },
  destination: { label: "Destination", kind: "text" },
  provider: { label: "Provider", kind: "text" },
  currency: { label: "CCY", kind: "text", title: "Currency (ISO 4217)" },
  attempts: { label: "Attempts", kind: "int" },
  connected: { label: "Connected", kind: "int" },
  asr: { label: "ASR", kind: "pct", title: "Answer-seizure ratio: connected / attempts" },
  ner: {
    label: "NER",
    kind: "pct",
    title: "Network effectiveness ratio: attempts answered or ended by the callee (busy, no answer, rejected) / attempts",
  },
  acd: { label: "ACD", kind: "dur", title: "Average call duration of connected calls (m:ss)" },
  pdd: { label: "PDD", kind: "sec", title: "Post-dial delay: average seconds from dialling to ringing, over the calls that report it" },
  duration: { label: "Duration", kind: "dur", minutes: true, title: "Billed time of connected calls (minutes:seconds)" },
  minutes: {
    label: "Billed Minutes",
    kind: "dec",
    title: "Billed time of connected calls in minutes (seconds / 60, 2 places, half to even)",
  },
  provider_charge: { label: "Total Provider Charge", kind: "money", title: "At the currency's usual decimals: hover for the exact sum" },
  customer_charge: { label: "Total Customer Charge", kind: "money", title: "At the currency's usual decimals: hover for the exact sum" },
  profit: { label: "Profit", kind: "money", signed: true },
  profit_pct: { label: "Profit %", kind: "pct", signed: true, title: "Profit / total customer charge" },
  pending: {
    label: "Customer Charge: Pending",
    kind: "int",
    title: "CDRs not rated yet: counted as attempts, their charge is added once rated",
  },
  dtmf: { label: "DTMF", kind: "int", title: "Calls with DTMF digits" },
  dtmf_pct: { label: "DTMF %", kind: "pct" },
  short_calls: { label: "Short Calls", kind: "int", title: "Connected calls shorter than the short-call threshold" },
  short_pct: { label: "Short %", kind: "pct", title: "Short calls / connected calls" },
};
const METRICS = [
  "currency",
  "attempts",
  "connected",
  "asr",
  "ner",
  "acd",
  "pdd",
  "duration",
  "minutes",
  "provider_charge",
  "customer_charge",
  "profit",
  "profit_pct",
  "pending",
  "dtmf",
  "dtmf_pct",
  "short_calls",
  "short_pct",
];
const MONEY = new Set(["provider_charge", "customer_charge", "profit", "profit_pct"]);
const COSTS = new Set(["provider_charge", "profit", "profit_pct"]); // not shown to customer keys
const HIDDEN_STORAGE = "breakout.hiddenColumns";
// The columns there were when the hidden ones were saved: a column added since then gets its
// default, rather than showing because an older choice did not name it.
const KNOWN_STORAGE = "breakout.knownColumns";
const KNOWN_BEFORE_NER = METRICS.filter((col) => !["ner", "pdd", "short_calls", "short_pct"].includes(col));
// Hidden until chosen in Manage Displayed Fields: the default columns fit a 1366-px screen.
const HIDDEN_BY_DEFAULT = ["dtmf_pct", "minutes", "short_calls", "short_pct"];
// Shown by default only while the table fits its width without scrolling sideways, dropped in
// this order: beside finance's columns, long names need more than 1366 px for them.
const SHOWN_IF_ROOM = ["pdd", "ner"];
// The trend's metrics (some of TREND_METRICS), remembered per browser like the columns.
const TREND_STORAGE = "breakout.trendMetrics";
const TREND_BY_DEFAULT = ["asr", "ner", "attempts"];
const INSIGHTS_HIDDEN_STORAGE = "breakout.insightsHidden";

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

function compareValues(kind, a, b) {
  if (kind === "text") return collator.compare(a, b);
  if (kind === "int") return a - b;
  return compareDecimal(a, b);
}

/** Rows sorted by ``col`` (stable; empty values last in both directions). */
export function sortRows(rows, col, descending) {
  const kind = COLUMNS[col]?.kind ?? "text";
  const usable = (v) => v !== null && v !== undefined && (kind === "text" || kind === "int" || parseDecimal(v));
  return rows
    .map((row, index) => ({ row, index }))
    .sort((p, q) => {
      const a = p.row[col];
      const b = q.row[col];
      const ua = usable(a);
      const ub = usable(b);
      if (!ua || !ub) return ua === ub ? p.index - q.index : ua ? -1 : 1;
      const order = compareValues(kind, a, b);
      return (descending ? -order : order) || p.index - q.index;
    })
    .map((p) => p.row);
}

/** The text a cell shows for ``col`` of ``row`` (money with the row's currency). */
export function cellText(col, row) {
  const spec = COLUMNS[col];
  const value = row[col];
  switch (spec.kind) {
    case "int":
      return formatInt(value);
    case "pct":
      return formatPct(value);
    case "dur":
      return formatDuration(value, spec.minutes);
    case "sec":
      return value === null || value === undefined ? DASH : `${formatDecimal(value)} s`;
    case "dec":
      return value === null || value === undefined ? DASH : formatDecimal(value);
    case "money":
      return formatMoney(value, row.currency);
    default:
      return value === null || value === undefined ? DASH : String(value);
  }
}

/** Cell HTML: money at the currency's usual decimals, the exact sum on hover. */
function cellHtml(col, row) {
  const spec = COLUMNS[col];
  const value = row[col];
  if (spec.kind === "money" && value !== null && value !== undefined) {
    const exact = `${row.currency ? `${row.currency} ` : ""}${formatDecimal(value)}`;
    const cls = spec.signed && String(value).startsWith("-") ? ' class="neg"' : "";
    return `<td${cls} title="${escapeHtml(exact)}">${escapeHtml(formatMoney(value, row.currency))}</td>`;
  }
  const text = cellText(col, row);
  const neg = spec.signed && typeof value === "string" && value.startsWith("-");
  return `<td${neg ? ' class="neg"' : ""}>${escapeHtml(text)}</td>`;
}

// ---------------------------------------------------------------- CSV

const CSV_HEADERS = {
  currency: "Currency",
  asr: "ASR %",
  ner: "NER %",
  acd: "ACD (s)",
  pdd: "PDD (s)",
  duration: "Duration (s)",
  profit_pct: "Profit %",
  dtmf_pct: "DTMF %",
  short_pct: "Short Calls %",
};

/** CSV of exactly the rows and totals shown, in the order shown; values exact (no floats). */
export function buildCsv(columns, rows, totalRows) {
  const header = columns.map((c) => CSV_HEADERS[c] ?? COLUMNS[c].label);
  const lines = [header.map(csvCell).join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvCell(row[c])).join(","));
  for (const { label, row } of totalRows) {
    lines.push(columns.map((c, i) => csvCell(i === 0 ? label : GROUP_KEYS.includes(c) ? "" : row[c])).join(","));
  }
  return `${lines.join("\r\n")}\r\n`;
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Every error the API answers is {"detail": "<one sentence>"} (docs/api.md, Errors). */
function detailText(body) {
  const detail = body?.detail;
  return typeof detail === "string" ? detail : null;
}

async function api(path, params = []) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of params) url.searchParams.append(name, value);
  let response;
  try {
    response = await fetch(url, {
      headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json" },
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "The Breakout API cannot be reached. Check the connection and press Refresh.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, detailText(body) ?? `The API answered ${response.status} ${response.statusText}.`);
  }
  return body;
}

// ---------------------------------------------------------------- state and elements

const $ = (id) => document.getElementById(id);
const state = {
  key: null,
  me: null,
  data: null, // the last /v1/breakout response
  view: [], // its rows in the order shown
  columns: [],
  sort: { col: "attempts", desc: true },
  alerts: new Map(), // destination -> [alert]
  refreshSeq: 0,
  answered: 0,
  loading: false,
  autoTimer: null,
  dirty: false,
  squeezed: new Set(), // columns shown if there is room, and there was not
  selection: null, // what the table was last asked for: the trend and causes follow it
  series: null, // the last /v1/series response drawn
  markers: [], // the alerts drawn on it
  trendSeq: 0,
  causesSeq: 0,
};

function showError(message) {
  const banner = $("error");
  banner.textContent = message ?? "";
  banner.hidden = !message;
}

function showNotice(message) {
  const banner = $("notice");
  banner.textContent = message ?? "";
  banner.hidden = !message;
}

function todayIn(tz) {
  // en-CA formats dates as YYYY-MM-DD
  return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(
    new Date(),
  );
}

// ---------------------------------------------------------------- multi-select

/** A searchable multi-select over the names an endpoint lists (destinations, customers, providers). */
class MultiSelect {
  constructor(root, onChange) {
    this.root = root;
    this.endpoint = root.dataset.endpoint;
    this.noun = root.dataset.noun;
    this.nouns = root.dataset.nouns;
    this.onChange = onChange;
    this.options = []; // [{name, attempts}]
    this.selected = new Set();
    this.seq = 0;
    this.loads = 0;
    const labelledBy = root.previousElementSibling?.id ?? "";
    root.innerHTML = `
      <button type="button" class="ms-toggle" aria-haspopup="listbox" aria-expanded="false" aria-labelledby="${labelledBy}">
        <span class="ms-value"></span><span class="ms-caret" aria-hidden="true"></span>
      </button>
      <div class="ms-panel" hidden>
        <input type="search" class="ms-search" placeholder="Search ${this.nouns}" aria-label="Search ${this.nouns}" autocomplete="off">
        <div class="ms-actions">
          <button type="button" class="link-button" data-action="all">Select shown</button>
          <button type="button" class="link-button" data-action="none">Clear</button>
          <span class="ms-count"></span>
        </div>
        <div class="ms-options" role="listbox" aria-multiselectable="true"></div>
      </div>`;
    this.toggle = root.querySelector(".ms-toggle");
    this.panel = root.querySelector(".ms-panel");
    this.search = root.querySelector(".ms-search");
    this.list = root.querySelector(".ms-options");
    this.count = root.querySelector(".ms-count");
    this.toggle.addEventListener("click", () => (this.panel.hidden ? this.open() : this.close()));
    this.search.addEventListener("input", () => this.renderOptions());
    this.list.addEventListener("change", (event) => {
      const box = event.target;
      if (box.type !== "checkbox") return;
      if (box.checked) this.selected.add(box.value);
      else this.selected.delete(box.value);
      this.changed();
    });
    root.querySelector('[data-action="all"]').addEventListener("click", () => {
      for (const o of this.filtered()) this.selected.add(o.name);
      this.renderOptions();
      this.changed();
    });
    root.querySelector('[data-action="none"]').addEventListener("click", () => {
      this.selected.clear();
      this.renderOptions();
      this.changed();
    });
    root.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !this.panel.hidden) {
        event.preventDefault();
        this.close();
        this.toggle.focus();
      }
    });
    document.addEventListener("click", (event) => {
      if (!this.panel.hidden && !root.contains(event.target)) this.close();
    });
    this.renderValue();
  }

  open() {
    for (const other of MultiSelect.all) if (other !== this) other.close();
    this.panel.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    this.renderOptions();
    this.search.focus();
  }

  close() {
    this.panel.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
  }

  values() {
    return [...this.selected];
  }

  filtered(options = this.options) {
    const words = this.search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    return options.filter((o) => words.every((w) => o.name.toLowerCase().includes(w)));
  }

  changed() {
    this.renderValue();
    this.onChange(this);
  }

  renderValue() {
    const n = this.selected.size;
    const text = n === 0 ? `All ${this.nouns}` : n === 1 ? [...this.selected][0] : `${n} ${this.nouns}`;
    this.root.querySelector(".ms-value").textContent = text;
    this.toggle.title = n > 1 ? [...this.selected].join("\n") : text;
    this.toggle.classList.toggle("ms-active", n > 0);
  }

  renderOptions() {
    // Selected names the period does not list stay visible, so they can be cleared.
    const known = new Set(this.options.map((o) => o.name));
    const missing = [...this.selected].filter((name) => !known.has(name)).map((name) => ({ name, attempts: 0 }));
    const shown = [...this.filtered(missing), ...this.filtered()];
    this.list.innerHTML = shown
      .map(
        (o) =>
          `<label class="ms-option" data-value="${escapeHtml(o.name)}"><input type="checkbox" value="${escapeHtml(o.name)}"${
            this.selected.has(o.name) ? " checked" : ""
          }><span class="ms-name">${escapeHtml(o.name)}</span><span class="ms-attempts">${formatInt(o.attempts)}</span></label>`,
      )
      .join("");
    if (!shown.length) this.list.innerHTML = `<p class="ms-none">No ${this.nouns} in this period</p>`;
    this.count.textContent = `${formatInt(shown.length)} of ${formatInt(this.options.length)}`;
  }

  async load(params) {
    const seq = ++this.seq;
    this.root.classList.add("ms-loading");
    try {
      const body = await api(`/v1/${this.endpoint}`, params);
      if (seq !== this.seq) return;
      const options = body.values ?? [];
      const same =
        options.length === this.options.length &&
        options.every((o, i) => o.name === this.options[i].name && o.attempts === this.options[i].attempts);
      this.options = options;
      if (!same && !this.panel.hidden) this.renderOptions(); // not under the pointer for nothing
      this.root.dataset.loaded = String(++this.loads); // for tests: a list has arrived
    } finally {
      if (seq === this.seq) this.root.classList.remove("ms-loading");
    }
  }
}
MultiSelect.all = [];

// ---------------------------------------------------------------- the query

function periodParams() {
  return [
    ["from", $("from").value],
    ["to", $("to").value],
    ["tz", $("tz").value],
  ];
}

function groupBy() {
  return GROUP_KEYS.filter((key) => {
    const box = document.querySelector(`[data-group="${key}"]`);
    return box.checked && !box.closest("[hidden]");
  });
}

/** The period and filters: what the table, the trend and the causes all read. */
function selectionParams() {
  const params = periodParams();
  for (const name of selects.destination.values()) params.push(["destination", name]);
  if (isAdmin()) {
    for (const name of selects.customer.values()) params.push(["customer", name]);
    for (const name of selects.provider.values()) params.push(["provider", name]);
  }
  return params;
}

function queryParams() {
  const params = selectionParams();
  params.push(["group_by", groupBy().join(",")]);
  const keys = groupBy();
  // A column the table does not show (another grouping, or costs after an admin signed out) is
  // not asked for: the API refuses a customer key's sort by a column hidden from it.
  const sortable = GROUP_KEYS.includes(state.sort.col)
    ? keys.includes(state.sort.col)
    : isAdmin() || !COSTS.has(state.sort.col);
  params.push(["sort", sortable ? `${state.sort.desc ? "-" : ""}${state.sort.col}` : "-attempts"]);
  params.push(["limit", String(ROW_LIMIT)]);
  return params;
}

function periodProblem() {
  const from = $("from").value;
  const to = $("to").value;
  if (!from || !to) return "Choose both dates of the period.";
  if (from > to) return "The start date is after the end date.";
  return null;
}

const isAdmin = () => state.me?.role === "admin";

// ---------------------------------------------------------------- loading

async function loadOptions() {
  if (periodProblem()) return;
  const base = periodParams();
  const scoped = [...base];
  if (isAdmin()) for (const name of selects.customer.values()) scoped.push(["customer", name]);
  const jobs = [selects.destination.load(scoped)];
  if (isAdmin()) jobs.push(selects.customer.load(base), selects.provider.load(scoped));
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) handleApiError(failed.reason);
}

async function loadAlerts() {
  if (!isAdmin()) return new Map();
  try {
    const body = await api("/v1/alerts");
    const byDestination = new Map();
    for (const alert of body.active ?? []) {
      if (!byDestination.has(alert.destination)) byDestination.set(alert.destination, []);
      byDestination.get(alert.destination).push(alert);
    }
    return byDestination;
  } catch (error) {
    if (error instanceof ApiError && (error.status === 403 || error.status === 404)) return new Map();
    throw error;
  }
}

async function refresh() {
  const problem = periodProblem();
  if (problem) {
    showError(problem);
    return;
  }
  const seq = ++state.refreshSeq;
  setLoading(true);
  state.selection = currentSelection();
  renderResolutionChoices();
  loadInsights(); // beside the table: neither waits for the other
  try {
    const [data, alerts] = await Promise.all([api("/v1/breakout", queryParams()), loadAlerts()]);
    if (seq !== state.refreshSeq) return;
    showError(null);
    state.data = withMinutes(data);
    state.alerts = alerts;
    state.dirty = false;
    $("refresh").classList.remove("stale");
    render();
  } catch (error) {
    if (seq === state.refreshSeq) handleApiError(error);
  } finally {
    if (seq === state.refreshSeq) {
      setLoading(false);
      state.answered += 1;
      $("app").dataset.answered = String(state.answered); // for tests: a refresh has finished
    }
  }
}

function setLoading(on) {
  state.loading = on;
  $("loading").hidden = !on;
  $("refresh").disabled = on;
  document.body.classList.toggle("is-loading", on);
}

function handleApiError(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(`The API did not accept the key: ${error.message}`);
    return;
  }
  if (!(error instanceof ApiError)) {
    showError(`Something went wrong in the page: ${error}`);
    console.error(error);
    return;
  }
  // 503: Redis is down or the mirror is being refilled, and no partial totals are served; a
  // table already shown stays as it was, which the banner says.
  const kept = error.status === 503 && state.data ? ". The table below is the last complete snapshot." : "";
  showError(error.message + kept);
}

function markDirty() {
  state.dirty = true;
  if (state.data) $("refresh").classList.add("stale");
}

// ---------------------------------------------------------------- the trend and the causes

let chart;

/** The selection as the last Refresh applied it (the form may have changed since). */
function currentSelection() {
  const from = $("from").value;
  const to = $("to").value;
  return {
    params: selectionParams(),
    destinations: new Set(selects.destination.values()),
    providers: new Set(isAdmin() ? selects.provider.values() : []),
    // Whole days of a nominal 24 h: a two-day range across a clock change is still 15-minute.
    hours: ((Date.parse(to) - Date.parse(from)) / 86_400_000 + 1) * 24,
  };
}

const insightsHidden = () => localStorage.getItem(INSIGHTS_HIDDEN_STORAGE) === "1";

function showInsights(shown) {
  localStorage.setItem(INSIGHTS_HIDDEN_STORAGE, shown ? "0" : "1");
  $("insights").hidden = !shown;
  $("toggle-insights").setAttribute("aria-pressed", String(shown));
  if (shown) loadInsights();
}

function loadInsights() {
  if (!state.selection || insightsHidden()) return;
  loadTrend();
  loadCauses();
}

/** The metrics chosen for the chart, remembered per browser; at least one. */
function trendMetrics() {
  try {
    const saved = JSON.parse(localStorage.getItem(TREND_STORAGE));
    const known = Array.isArray(saved) ? Object.keys(TREND_METRICS).filter((m) => saved.includes(m)) : [];
    if (known.length) return known;
  } catch {
    // nothing saved, or not ours: the defaults
  }
  return TREND_BY_DEFAULT;
}

function chooseTrendMetric(event) {
  const box = event.target.closest("input[data-metric]");
  if (!box) return;
  const chosen = [...document.querySelectorAll("#trend-metrics input:checked")].map((b) => b.dataset.metric);
  if (!chosen.length) {
    box.checked = true; // at least one metric
    return;
  }
  localStorage.setItem(TREND_STORAGE, JSON.stringify(chosen));
  drawTrend();
}

/** "Auto" names what it picks for this range; a chosen resolution stays until changed. */
function renderResolutionChoices() {
  const select = $("trend-resolution");
  const chosen = select.value || "auto";
  const auto = state.selection ? RESOLUTIONS[autoResolution(state.selection.hours)].label : null;
  select.innerHTML = [
    `<option value="auto">Auto${auto ? ` (${auto})` : ""}</option>`,
    ...Object.entries(RESOLUTIONS).map(([value, r]) => `<option value="${value}">${r.label}</option>`),
  ].join("");
  select.value = chosen;
}

function trendResolution() {
  const chosen = $("trend-resolution").value;
  return chosen && chosen !== "auto" ? chosen : autoResolution(state.selection.hours);
}

function setPanelStatus(panel, message, isError = false) {
  const status = $(`${panel}-status`);
  status.textContent = message ?? "";
  status.classList.toggle("panel-error", isError);
}

/** A panel's load failed: the API's sentence in the panel, the last figures kept on a 503. */
function panelError(panel, error, shown, showIn) {
  if (error instanceof ApiError && error.status === 401) {
    handleApiError(error);
    return;
  }
  if (!(error instanceof ApiError)) console.error(error);
  const message = error instanceof ApiError ? error.message : `Something went wrong in the page: ${error}`;
  if (error instanceof ApiError && error.status === 503 && shown) {
    setPanelStatus(panel, `${message} Below: the last complete figures.`, true);
    return;
  }
  setPanelStatus(panel, "");
  showIn(message);
}

async function loadTrend() {
  const seq = ++state.trendSeq;
  const { params, destinations, providers } = state.selection;
  const query = [...params, ["resolution", trendResolution()], ...Object.keys(TREND_METRICS).map((m) => ["metric", m])];
  setPanelStatus("trend", "Loading…");
  try {
    const series = await api("/v1/series", query);
    const markers = isAdmin() ? await loadMarkers(series.from, destinations, providers) : [];
    if (seq !== state.trendSeq) return;
    state.series = series;
    state.markers = markers;
    setPanelStatus("trend", "");
    drawTrend();
  } catch (error) {
    if (seq !== state.trendSeq) return;
    panelError("trend", error, state.series !== null, (message) => {
      state.series = null;
      chart.clear(message);
      $("trend-legend").hidden = true;
    });
  }
}

/** The alerts raised or cleared since ``since`` on the selection's destinations (and providers). */
async function loadMarkers(since, destinations, providers) {
  try {
    const body = await api("/v1/alerts", [["since", since]]);
    return (body.history ?? []).filter(
      (a) =>
        (!destinations.size || destinations.has(a.destination)) &&
        (!providers.size || !a.provider || providers.has(a.provider)),
    );
  } catch (error) {
    if (error instanceof ApiError && (error.status === 403 || error.status === 404)) return [];
    throw error;
  }
}

function drawTrend() {
  if (!state.series) return;
  chart.draw(state.series, { metrics: trendMetrics(), markers: state.markers, tz: state.series.tz });
  $("trend-legend").hidden = !state.markers.length;
}

async function loadCauses() {
  const seq = ++state.causesSeq;
  setPanelStatus("causes", "Loading…");
  try {
    const body = await api("/v1/causes", state.selection.params);
    if (seq !== state.causesSeq) return;
    setPanelStatus("causes", "");
    renderCauses($("causes-body"), body, body.tz);
  } catch (error) {
    if (seq !== state.causesSeq) return;
    panelError("causes", error, $("causes-body").childElementCount > 0, (message) => {
      $("causes-body").innerHTML = `<p class="panel-error">${escapeHtml(message)}</p>`;
    });
  }
}

// ---------------------------------------------------------------- rendering

function render() {
  const data = state.data;
  const keys = (data.group_by ?? []).filter((k) => GROUP_KEYS.includes(k));
  const hidden = hiddenColumns();
  state.columns = [...keys, ...shownMetrics().filter((col) => !hidden.has(col))];
  renderHeader(); // measured in its font
  const widths = measureColumns(state.columns);
  state.squeezed = new Set();
  const room = $("table-wrap").clientWidth;
  for (const col of roomDecides(hidden)) {
    if (widths.reduce((a, b) => a + b, 0) <= room) break;
    const at = state.columns.indexOf(col);
    state.columns.splice(at, 1);
    widths.splice(at, 1);
    state.squeezed.add(col);
  }
  renderFieldChooser(new Set([...hidden, ...state.squeezed]));
  if (!state.columns.includes(state.sort.col)) state.sort = { col: "attempts", desc: true };
  renderHeader();
  renderTotals();
  applyColumnWidths(widths);
  renderBody();
  renderAlerts();
  renderStatus();
  const shown = data.rows.length;
  $("row-count").textContent = `${formatInt(shown)} ${shown === 1 ? "row" : "rows"}`;
  $("empty").hidden = shown > 0;
  $("download-csv").disabled = false;
  showNotice(
    data.total_rows > shown
      ? `Showing the first ${formatInt(shown)} of ${formatInt(data.total_rows)} rows (sorted by ${COLUMNS[state.sort.col].label}); narrow the filters to see the rest. Totals cover all rows.`
      : null,
  );
}

/** The snapshot with each row's (and total's) billed minutes, derived from its duration. */
function withMinutes(data) {
  const add = (row) => (row ? { ...row, minutes: minutesOf(row.duration) } : row);
  return {
    ...data,
    rows: data.rows.map(add),
    totals: add(data.totals),
    currency_totals: data.currency_totals?.map(add),
  };
}

/** The metric columns this key may see. */
function shownMetrics() {
  return METRICS.filter((col) => isAdmin() || !COSTS.has(col));
}

/** Columns hidden in Manage Displayed Fields, remembered per browser. */
function hiddenColumns() {
  try {
    const saved = JSON.parse(localStorage.getItem(HIDDEN_STORAGE));
    if (Array.isArray(saved)) {
      const known = JSON.parse(localStorage.getItem(KNOWN_STORAGE)) ?? KNOWN_BEFORE_NER;
      const added = HIDDEN_BY_DEFAULT.filter((col) => !known.includes(col));
      return new Set([...saved, ...added].filter((col) => METRICS.includes(col)));
    }
  } catch {
    // nothing saved, or not ours: the defaults
  }
  return new Set(HIDDEN_BY_DEFAULT);
}

/** Of SHOWN_IF_ROOM, those not hidden and never chosen either way in Manage Displayed Fields. */
function roomDecides(hidden) {
  let chosen = [];
  try {
    if (localStorage.getItem(HIDDEN_STORAGE) !== null) {
      chosen = JSON.parse(localStorage.getItem(KNOWN_STORAGE)) ?? KNOWN_BEFORE_NER;
    }
  } catch {
    // not ours: nothing chosen
  }
  return SHOWN_IF_ROOM.filter((col) => !hidden.has(col) && !chosen.includes(col));
}

function renderFieldChooser(hidden) {
  $("field-list").innerHTML = shownMetrics()
    .filter((col) => col !== "currency") // money needs its currency beside it
    .map(
      (col) =>
        `<label class="check"><input type="checkbox" data-field="${col}"${hidden.has(col) ? "" : " checked"}> ${escapeHtml(COLUMNS[col].label)}</label>`,
    )
    .join("");
}

function chooseField(event) {
  const box = event.target.closest("input[data-field]");
  if (!box) return;
  // What the list shows is what is kept: a column left out for lack of room stays out.
  const hidden = new Set([...hiddenColumns(), ...state.squeezed]);
  if (box.checked) hidden.delete(box.dataset.field);
  else hidden.add(box.dataset.field);
  localStorage.setItem(HIDDEN_STORAGE, JSON.stringify([...hidden]));
  localStorage.setItem(KNOWN_STORAGE, JSON.stringify(METRICS));
  if (state.data) render();
}

function renderHeader() {
  $("header-row").innerHTML = state.columns
    .map((col) => {
      const spec = COLUMNS[col];
      const sorted = col === state.sort.col ? (state.sort.desc ? "descending" : "ascending") : "none";
      const cls = spec.kind === "text" ? "k" : "n";
      const title = spec.title ? ` title="${escapeHtml(spec.title)}"` : "";
      return `<th scope="col" class="${cls}" data-col="${col}" aria-sort="${sorted}"${title}><button type="button">${escapeHtml(spec.label)}</button></th>`;
    })
    .join("");
}

// The body is windowed: only the rows in view (plus a margin) are in the DOM, between two
// spacer rows, so sorting or scrolling 10,000 rows costs what 100 do. Columns have fixed
// widths measured from all the values, so they do not move while scrolling.
const OVERSCAN = 40;
const win = { start: 0, end: 0, rowHeight: 25 };

function renderBody() {
  state.view = sortRows(state.data.rows, state.sort.col, state.sort.desc);
  state.rowHtml = new Array(state.view.length);
  paintRows(true);
}

function rowHtml(i) {
  let html = state.rowHtml[i];
  if (html !== undefined) return html;
  const row = state.view[i];
  html = i % 2 ? '<tr class="alt">' : "<tr>";
  for (const col of state.columns) {
    if (COLUMNS[col].kind === "text") {
      const value = row[col] ?? "";
      const flag = col === "destination" && state.alerts.has(value) ? alertFlag(value) : "";
      html += `<td class="k">${escapeHtml(value)}${flag}</td>`;
    } else {
      html += cellHtml(col, row);
    }
  }
  html += "</tr>";
  state.rowHtml[i] = html;
  return html;
}

function paintRows(force = false) {
  const wrap = $("table-wrap");
  const count = state.view.length;
  const first = Math.floor(Math.max(0, wrap.scrollTop - $("header-row").offsetHeight) / win.rowHeight);
  const shown = Math.ceil(Math.min(wrap.clientHeight, window.innerHeight) / win.rowHeight) + 1;
  const aboveOk = win.start === 0 || first - 10 >= win.start;
  const belowOk = win.end === count || first + shown + 10 <= win.end;
  if (!force && aboveOk && belowOk) return;
  win.start = Math.max(0, first - OVERSCAN);
  win.end = Math.min(count, first + shown + OVERSCAN);
  const parts = [`<tr class="pad" id="pad-top"><td colspan="${state.columns.length}"></td></tr>`];
  for (let i = win.start; i < win.end; i++) parts.push(rowHtml(i));
  parts.push(`<tr class="pad" id="pad-bottom"><td colspan="${state.columns.length}"></td></tr>`);
  $("rows").innerHTML = parts.join("");
  const measured = $("rows").rows[1]?.getBoundingClientRect().height;
  if (measured && Math.abs(measured - win.rowHeight) > 0.01) win.rowHeight = measured;
  setPad("pad-top", win.start * win.rowHeight);
  setPad("pad-bottom", (count - win.end) * win.rowHeight);
}

function setPad(id, height) {
  const row = $(id);
  row.hidden = height <= 0;
  row.firstElementChild.style.height = `${height}px`;
}

/** Column widths from the widest value of each column (rows and totals), measured once. */
function measureColumns(columns) {
  const table = $("breakout-table");
  const probe = document.createElement("canvas").getContext("2d");
  // Built from the longhands: the `font` shorthand is empty when font-variant-numeric is set.
  const fontOf = (el, weight) => {
    const style = getComputedStyle(el);
    return `${weight ?? style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  };
  const cellFont = fontOf(table);
  const boldFont = fontOf(table, 600); // the totals rows
  const headFont = fontOf($("header-row").firstElementChild ?? table);
  const totals = totalRows().map((t) => t.row);
  const text = (spec, col, row) => (spec.kind === "text" ? String(row[col] ?? "") : cellText(col, row));
  const widest = (texts, font) => {
    const longest = new Map(); // length -> a text of that length
    for (const t of texts) if (!longest.has(t.length)) longest.set(t.length, t);
    probe.font = font;
    const candidates = [...longest.entries()].sort((a, b) => b[0] - a[0]).slice(0, 4);
    return Math.max(0, ...candidates.map(([, t]) => probe.measureText(t).width));
  };
  return columns.map((col) => {
    const spec = COLUMNS[col];
    let width = Math.max(
      widest(state.data.rows.map((row) => text(spec, col, row)), cellFont),
      widest(totals.map((row) => text(spec, col, row)), boldFont),
    );
    if (col === "destination" && state.data.rows.some((row) => state.alerts.has(row.destination))) width += 40;
    probe.font = headFont;
    // Headers wrap between words: the longest word sets the width.
    const words = spec.label.toUpperCase().split(" ");
    const head = Math.max(...words.map((w) => probe.measureText(w).width)) * 1.05 + 12; // letter-spacing, arrow
    width = Math.max(width, head, GROUP_KEYS.includes(col) ? 80 : 36) + 13; // padding
    return Math.ceil(spec.kind === "text" ? Math.min(width, 300) : width);
  });
}

/** Fixed widths, so columns do not move while scrolling the windowed rows. */
function applyColumnWidths(widths) {
  const table = $("breakout-table");
  let colgroup = table.querySelector("colgroup");
  if (!colgroup) {
    colgroup = document.createElement("colgroup");
    table.prepend(colgroup);
  }
  colgroup.innerHTML = widths.map(() => "<col>").join("");
  [...colgroup.children].forEach((c, i) => {
    c.style.width = `${widths[i]}px`;
  });
  table.style.minWidth = `${widths.reduce((a, b) => a + b, 0)}px`;
}

/** An alert's percent figures (numbers with 2 decimals in the alert document) as text. */
function alertPct(value) {
  if (value === null || value === undefined) return DASH;
  return formatPct(typeof value === "number" ? value.toFixed(2) : value);
}

/** An alert's PDD figures (milliseconds in the alert document) as seconds. */
function alertSeconds(value) {
  if (value === null || value === undefined) return DASH;
  return `${(value / 1000).toFixed(2)} s`;
}

const ALERT_METRICS = { asr: ["ASR", alertPct], ner: ["NER", alertPct], pdd: ["PDD", alertSeconds] };

/** What an alert is about: its metric's name (alerts from before metrics existed are ASR). */
function alertMetric(a) {
  return ALERT_METRICS[a.metric ?? "asr"] ?? ALERT_METRICS.asr;
}

function alertSummary(a) {
  const route = a.provider ? `via ${a.provider}` : "all providers";
  const [name, shown] = alertMetric(a);
  const value = a.value ?? a.asr;
  const baseline = a.metric ? a.baseline : a.baseline_asr;
  const usual = baseline === null || baseline === undefined ? `threshold ${shown(a.threshold)}` : `usually ${shown(baseline)}`;
  const grown = (a.grown_causes ?? []).slice(0, 2).map((c) => `${c.code} +${c.change_points.toFixed(1)} pts`);
  const causes = grown.length ? `; grew: ${grown.join(", ")}` : "";
  return `${route}: ${name} ${shown(value)} (${usual}) over ${formatInt(a.attempts)} attempts${causes}`;
}

function alertFlag(destination) {
  const alerts = state.alerts.get(destination);
  const names = [...new Set(alerts.map((a) => alertMetric(a)[0]))].join(" ");
  const lines = alerts.map(alertSummary);
  return ` <span class="alert-flag" title="${escapeHtml(names)} alert\n${escapeHtml(lines.join("\n"))}">${escapeHtml(names)}</span>`;
}

/** The totals rows shown under the table: the grand total, then one per currency when mixed. */
function totalRows() {
  const data = state.data;
  const perCurrency = data.currency_totals ?? [];
  const rows = [{ label: "Total", row: data.totals, id: "totals-row" }];
  if (perCurrency.length > 1) {
    for (const row of perCurrency) rows.push({ label: `Total ${row.currency}`, row, currency: row.currency });
  }
  return rows;
}

function renderTotals() {
  const keys = state.columns.filter((c) => GROUP_KEYS.includes(c)).length;
  const mixed = (state.data.currency_totals ?? []).length > 1;
  $("totals").innerHTML = totalRows()
    .map(({ label, row, id, currency }) => {
      const attrs = id ? ` id="${id}"` : ` class="currency-total-row" data-currency="${escapeHtml(currency)}"`;
      let html = `<tr${attrs}><th scope="row" class="k" colspan="${Math.max(keys, 1)}">${escapeHtml(label)}</th>`;
      for (const col of state.columns.slice(keys || 1)) {
        if (id && mixed && (MONEY.has(col) || col === "currency")) {
          html += `<td data-col="${col}" class="mixed" title="Several currencies: one total per currency below">${DASH}</td>`;
          continue;
        }
        const cell = COLUMNS[col].kind === "text" ? `<td class="k">${escapeHtml(row[col] ?? DASH)}</td>` : cellHtml(col, row);
        const raw = row[col] === null || row[col] === undefined ? "" : String(row[col]);
        html += cell.replace("<td", `<td data-col="${col}" data-value="${escapeHtml(raw)}"`);
      }
      return `${html}</tr>`;
    })
    .join("");
}

function renderAlerts() {
  const panel = $("alerts");
  const alerts = [...state.alerts.values()].flat();
  panel.hidden = !isAdmin() || alerts.length === 0;
  $("alert-count").textContent = String(alerts.length);
  $("alert-list").innerHTML = alerts
    .map(
      (a) =>
        `<li data-destination="${escapeHtml(a.destination)}"><strong>${escapeHtml(a.destination)}</strong> ` +
        `${escapeHtml(alertSummary(a))} <span class="muted">since ${escapeHtml(formatTime(a.window_start, true))}</span></li>`,
    )
    .join("");
}

function formatTime(iso, withDate = false) {
  if (!iso) return DASH;
  const tz = $("tz").value;
  const options = { timeZone: tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  if (withDate) Object.assign(options, { day: "numeric", month: "short" });
  const zone = tz === "UTC" ? "UTC" : tz.split("/").pop().replaceAll("_", " ");
  return `${new Intl.DateTimeFormat("en-GB", options).format(new Date(iso))} ${zone}`;
}

function formatAge(seconds) {
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

// Past these, the status dot turns amber, then red: the figures are older than a NOC or a
// portal user would assume. `behind` is how far the mirror trails what the workers have
// ingested (the pipeline falling behind); `age` is since the newest complete event time
// (which also grows when no CDRs arrive, so it is the gentler signal).
const AMBER = { ageS: 60, behindS: 10 };
const RED = { ageS: 300, behindS: 60 };

function freshnessState(ageS, behindMs) {
  const behindS = (behindMs ?? 0) / 1000;
  if (ageS > RED.ageS || behindS > RED.behindS) return "late";
  if (ageS > AMBER.ageS || behindS > AMBER.behindS) return "old";
  return "fresh";
}

function renderStatus() {
  const el = $("as-of");
  const data = state.data;
  if (!data) return;
  if (!data.as_of) {
    el.textContent = "No complete snapshot yet for this period";
    el.dataset.state = "empty";
    return;
  }
  const asOf = new Date(data.as_of);
  const age = Math.max(0, (Date.now() - asOf.getTime()) / 1000);
  const today = todayIn($("tz").value) === new Intl.DateTimeFormat("en-CA", { timeZone: $("tz").value }).format(asOf);
  const behindS = (data.behind_ms ?? 0) / 1000;
  const behind = behindS > AMBER.behindS ? ` · ${Math.round(behindS)} s behind the ingest` : "";
  el.textContent = `as of ${formatTime(data.as_of, !today)} · ${formatAge(age)}${behind}`;
  el.title =
    `Complete up to ${data.as_of} (event time). ` +
    `The newest mirrored CDR trails the newest ingested by ${behindS.toFixed(1)} s.`;
  el.dataset.state = freshnessState(age, data.behind_ms);
}

// ---------------------------------------------------------------- CSV download

function downloadCsv() {
  if (!state.data) return;
  const csv = buildCsv(state.columns, state.view, totalRows());
  const blob = new Blob(["\ufeff", csv], { type: "text/csv;charset=utf-8" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  const tz = $("tz").value.replaceAll("/", "-");
  link.download = `breakout_${$("from").value}_${$("to").value}_${tz}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

// ---------------------------------------------------------------- sign-in

async function signIn(key) {
  state.key = key;
  const me = await api("/v1/me");
  state.me = me;
  window.localStorage.setItem(KEY_STORAGE, key);
  $("signin").hidden = true;
  $("app").hidden = false;
  $("account").hidden = false;
  $("account-name").textContent = me.role === "admin" ? "Administrator" : `Account ${me.customer}`;
  for (const el of document.querySelectorAll("[data-admin-only]")) el.hidden = me.role !== "admin";
  if (me.role !== "admin") $("group-customer").checked = false;
  loadOptions();
  await refresh();
}

function signOut(message) {
  window.localStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.me = null;
  state.data = null;
  // The next key must not see this one's chart, nor answers still on their way for it.
  state.selection = null;
  state.series = null;
  state.markers = [];
  state.trendSeq += 1;
  state.causesSeq += 1;
  chart?.clear("");
  $("causes-body").innerHTML = "";
  $("auto-refresh").checked = false;
  setAutoRefresh(false);
  $("app").hidden = true;
  $("account").hidden = true;
  $("signin").hidden = false;
  $("api-key").value = "";
  const error = $("signin-error");
  error.textContent = message ?? "";
  error.hidden = !message;
  $("api-key").focus();
}

function setAutoRefresh(on) {
  clearInterval(state.autoTimer);
  state.autoTimer = on
    ? setInterval(() => {
        if (!state.loading && document.visibilityState === "visible") refresh();
      }, AUTO_REFRESH_MS)
    : null;
}

// ---------------------------------------------------------------- wiring

let selects;

function init() {
  const tz = $("tz");
  const zones = [...TIME_ZONES];
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (local && !zones.includes(local)) zones.push(local);
  tz.innerHTML = zones.map((z) => `<option value="${escapeHtml(z)}">${escapeHtml(z.replaceAll("_", " "))}</option>`).join("");
  tz.value = "UTC";
  $("from").value = todayIn("UTC");
  $("to").value = todayIn("UTC");

  let optionsTimer = null;
  const periodChanged = () => {
    markDirty();
    clearTimeout(optionsTimer);
    optionsTimer = setTimeout(loadOptions, 250);
  };
  const made = {};
  for (const name of ["destination", "customer", "provider"]) {
    made[name] = new MultiSelect($(`${name}-select`), (select) => {
      markDirty();
      if (select === made.customer) periodChanged();
    });
    MultiSelect.all.push(made[name]);
  }
  selects = made;

  for (const id of ["from", "to", "tz"]) $(id).addEventListener("change", periodChanged);
  $("group-by").addEventListener("change", (event) => {
    if (!groupBy().length) event.target.checked = true; // at least one grouping
    markDirty();
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });
  $("auto-refresh").addEventListener("change", (event) => setAutoRefresh(event.target.checked));
  $("download-csv").addEventListener("click", downloadCsv);
  chart = new TrendChart($("trend-chart"));
  const swatch = (color) => `<svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" rx="2" fill="${color}"></rect></svg>`;
  const charted = trendMetrics();
  $("trend-metrics").insertAdjacentHTML(
    "beforeend",
    Object.entries(TREND_METRICS)
      .map(
        ([metric, spec]) =>
          `<label class="check"><input type="checkbox" data-metric="${metric}"${charted.includes(metric) ? " checked" : ""}>${swatch(spec.color)} ${spec.label}</label>`,
      )
      .join(""),
  );
  $("trend-metrics").addEventListener("change", chooseTrendMetric);
  renderResolutionChoices();
  $("trend-resolution").addEventListener("change", () => state.selection && loadTrend());
  $("insights").hidden = insightsHidden();
  $("toggle-insights").setAttribute("aria-pressed", String(!insightsHidden()));
  $("toggle-insights").addEventListener("click", () => showInsights(insightsHidden()));
  $("field-list").addEventListener("change", chooseField);
  $("header-row").addEventListener("click", (event) => {
    const th = event.target.closest("th[data-col]");
    if (!th || !state.data) return;
    const col = th.dataset.col;
    const desc = col === state.sort.col ? !state.sort.desc : COLUMNS[col].kind !== "text";
    state.sort = { col, desc };
    renderHeader();
    $("table-wrap").scrollTop = 0;
    renderBody();
  });
  $("sign-out").addEventListener("click", () => signOut(null));
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    $("sign-in").disabled = true;
    try {
      await signIn(key);
    } catch (error) {
      signOut(error instanceof ApiError ? error.message : String(error));
    } finally {
      $("sign-in").disabled = false;
    }
  });
  setInterval(renderStatus, 1000);
  let scrollFrame = 0;
  const onScroll = () => {
    if (scrollFrame || !state.data) return;
    scrollFrame = requestAnimationFrame(() => {
      scrollFrame = 0;
      paintRows();
    });
  };
  $("table-wrap").addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", onScroll);

  const saved = window.localStorage.getItem(KEY_STORAGE);
  if (saved) {
    signIn(saved).catch((error) => signOut(error instanceof ApiError ? error.message : String(error)));
  } else {
    signOut(null);
  }
}

// For the browser test and the curious: the pure helpers, callable from the console.
window.breakoutPortal = {
  formatInt,
  formatDecimal,
  formatMoney,
  roundDecimal,
  minorDigits,
  minutesOf,
  formatPct,
  formatDuration,
  compareDecimal,
  sortRows,
  freshnessState,
  buildCsv,
  csv: () => (state.data ? buildCsv(state.columns, state.view, totalRows()) : null),
  autoResolution,
  periodText,
};

init();
