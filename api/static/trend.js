// The trend chart: the selection's ASR, NER, ACD, PDD and attempts over time, with the NOC's
// alert raises and clears, drawn as plain SVG by this module (no library, no build step,
// nothing from another origin).
//
// Ratios (percent), ACD and PDD (seconds) and attempts (a count) do not share a scale, and
// ACD is minutes where PDD is seconds, so each gets its own small panel over one time axis
// (small multiples): ASR and NER share the percent panel, attempts are bars. Values are only
// turned into numbers to place them; the tooltip and the data attributes carry the API's
// exact decimal strings.

import { escapeHtml, formatInt } from "./format.js";

/** The metrics the chart can show, in the order of the checkboxes. */
export const TREND_METRICS = {
  asr: { label: "ASR", unit: "%", color: "#1f5fbf" },
  ner: { label: "NER", unit: "%", color: "#9a3fbf" },
  acd: { label: "ACD", unit: "s", color: "#0f766e" },
  pdd: { label: "PDD", unit: "s", color: "#c2410c" },
  attempts: { label: "Attempts", unit: "", color: "#8d9bad" },
};

// One panel per scale; a panel is drawn when one of its metrics is chosen. ``weight`` is its
// share of the height; percent is 0-100 always, so ASR and NER read the same at any range.
const PANELS = [
  { metrics: ["asr", "ner"], weight: 3, max: 100 },
  { metrics: ["acd"], weight: 2 },
  { metrics: ["pdd"], weight: 2 },
  { metrics: ["attempts"], weight: 2, bars: true },
];

/** Bucket sizes ``GET /v1/series`` takes; ``steps``: label spacings, in points, to pick from. */
export const RESOLUTIONS = {
  minute: { label: "1 min", minutes: 1, steps: [1, 5, 10, 15, 30, 60, 120, 180, 360, 720] },
  "15m": { label: "15 min", minutes: 15, steps: [1, 2, 4, 8, 12, 24, 48, 96] },
  hour: { label: "Hour", minutes: 60, steps: [1, 2, 3, 6, 12, 24, 48, 72, 168] },
  day: { label: "Day", minutes: 1440, steps: [1, 2, 7, 14, 28, 56] },
};

/** The resolution for a range of ``hours``: about 24 to 800 points whatever the range. */
export function autoResolution(hours) {
  if (hours <= 6) return "minute";
  if (hours <= 48) return "15m";
  if (hours <= 35 * 24) return "hour";
  return "day";
}

const MIN_HEIGHT = 150; // the stylesheet sizes the plot; below this, panels are unreadable
const MARGIN = { top: 14, right: 12, bottom: 20, left: 52 };
const PANEL_GAP = 14;
const MIN_LABEL_PX = 68; // between two time labels

/** A round number at or above ``value`` (1, 2, 2.5 or 5 times a power of ten). */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((m) => m >= value);
}

/** The wall-clock parts of an instant in ``tz`` (for labels), from one cached formatter. */
function clockIn(tz) {
  const format = new Intl.DateTimeFormat("en-GB", {
    timeZone: tz,
    weekday: "short",
    day: "numeric",
    month: "short",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  });
  return (ms) => Object.fromEntries(format.formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
}

/** What a time zone is called in a label: "UTC", or its city. */
export function zoneName(tz) {
  return tz === "UTC" ? "UTC" : tz.split("/").pop().replaceAll("_", " ");
}

/** An alert's moment: when the detector saw the window end (event time). */
export function alertTime(alert) {
  return Date.parse(alert.detected_at ?? alert.window_end);
}

/** An exact value as the tooltip shows it: the API's string, with its unit. */
function exact(metric, value) {
  if (value === null || value === undefined) return "no data";
  if (metric === "attempts") return formatInt(value);
  return `${value}${TREND_METRICS[metric].unit === "%" ? "%" : " s"}`;
}

/**
 * The chart in ``root``: ``draw`` it with a ``GET /v1/series`` answer, the metrics to show and
 * the alert markers; it redraws itself at its container's width and shows a point's exact
 * values under the pointer (or the arrow keys, once focused).
 */
export class TrendChart {
  constructor(root) {
    this.view = null; // the last draw's {series, metrics, markers, tz} and where render placed them
    this.width = 0;
    this.height = 0;
    root.innerHTML = `<div class="trend-plot"></div><div class="trend-tip" role="status" hidden></div>`;
    this.plot = root.querySelector(".trend-plot");
    this.tip = root.querySelector(".trend-tip");
    this.plot.addEventListener("pointermove", (event) => this.pointAt(event.clientX));
    this.plot.addEventListener("pointerleave", () => this.hover(null));
    this.plot.addEventListener("keydown", (event) => this.key(event));
    this.plot.addEventListener("blur", () => this.hover(null), true);
    new ResizeObserver(() => {
      const { clientWidth, clientHeight } = this.plot;
      const resized = clientWidth !== this.width || clientHeight !== this.height;
      if (this.view && clientWidth && resized) this.render(); // not while hidden
    }).observe(this.plot);
  }

  /** Show ``series`` (a /v1/series answer): ``metrics`` chosen, ``markers`` alert documents. */
  draw(series, { metrics, markers = [], tz }) {
    this.view = { series, metrics, markers, tz };
    this.render();
  }

  clear(message) {
    this.view = null;
    this.tip.hidden = true;
    this.plot.innerHTML = `<p class="trend-empty">${escapeHtml(message)}</p>`;
  }

  render() {
    const { series, metrics, markers, tz } = this.view;
    const points = series.points ?? [];
    this.width = this.plot.clientWidth;
    this.height = this.plot.clientHeight;
    this.tip.hidden = true; // it points at a place on the chart being replaced
    if (!points.length) {
      this.plot.innerHTML = `<p class="trend-empty">No points in this range.</p>`;
      return;
    }
    const width = Math.max(this.width, 200);
    const height = Math.max(this.height, MIN_HEIGHT);
    const left = MARGIN.left;
    const right = width - MARGIN.right;
    const band = (right - left) / points.length;
    const starts = points.map((p) => Date.parse(p.start));
    const ends = points.map((p) => Date.parse(p.end));
    const clock = clockIn(tz);
    Object.assign(this.view, { left, right, band, height, starts, ends, clock, index: null });

    const panels = this.layout(metrics);
    const top = MARGIN.top;
    const bottom = height - MARGIN.bottom;
    const parts = [
      `<svg class="trend-svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" tabindex="0" role="img" aria-label="${escapeHtml(this.summary(metrics))}">`,
      this.timeAxis(top, bottom),
      ...panels.map((panel) => this.panel(panel, points)),
      this.markerMarks(markers, top, bottom),
      `<rect class="trend-cursor" x="0" y="${top}" width="0" height="${bottom - top}" visibility="hidden"></rect>`,
      `<g class="trend-dots"></g>`,
      this.hitAreas(points, top, bottom),
      "</svg>",
    ];
    this.plot.innerHTML = parts.join("");
    this.view.panels = panels;
  }

  summary(metrics) {
    const { series, tz } = this.view;
    const names = metrics.map((m) => TREND_METRICS[m].label).join(", ");
    const res = RESOLUTIONS[series.resolution]?.label ?? series.resolution;
    return `${names} per ${res.toLowerCase()}, ${this.when(Date.parse(series.from))} to ${this.when(Date.parse(series.to))} ${zoneName(tz)}`;
  }

  when(ms) {
    const c = this.view.clock(ms);
    return `${c.day} ${c.month} ${c.year} ${c.hour}:${c.minute}`;
  }

  /** The panels of the chosen metrics, stacked top to bottom with their pixel bounds. */
  layout(metrics) {
    const chosen = PANELS.map((p) => ({ ...p, metrics: p.metrics.filter((m) => metrics.includes(m)) })).filter(
      (p) => p.metrics.length,
    );
    const room = this.view.height - MARGIN.top - MARGIN.bottom - PANEL_GAP * (chosen.length - 1);
    const weights = chosen.reduce((sum, p) => sum + p.weight, 0);
    let y = MARGIN.top;
    return chosen.map((p) => {
      const height = (room * p.weight) / weights;
      const panel = { ...p, top: y, bottom: y + height };
      y += height + PANEL_GAP;
      return panel;
    });
  }

  /** One panel: its scale, grid, legend, and its metrics as lines (bars for attempts). */
  panel(panel, points) {
    const { left, right, band } = this.view;
    const values = panel.metrics.flatMap((m) => points.map((p) => (p[m] === null ? null : Number(p[m]))));
    const max = panel.max ?? niceMax(Math.max(0, ...values.filter((v) => v !== null)));
    const y = (v) => panel.bottom - (v / max) * (panel.bottom - panel.top);
    panel.y = y;
    const unit = TREND_METRICS[panel.metrics[0]].unit;
    const tickText = (v) => (unit === "%" ? `${v}%` : unit === "s" ? `${v} s` : formatInt(v));
    // A middle line only where the panel has room for three labels.
    const roomy = panel.bottom - panel.top >= 48;
    const ticks = [0, max / 2, max].filter((v) => v !== max / 2 || (roomy && (unit || Number.isInteger(v))));
    const html = [`<g class="trend-panel" data-metrics="${panel.metrics.join(" ")}">`];
    for (const v of ticks) {
      html.push(
        `<line class="trend-grid${v === 0 ? " trend-base" : ""}" x1="${left}" x2="${right}" y1="${y(v)}" y2="${y(v)}"></line>`,
        `<text class="trend-tick" x="${left - 6}" y="${y(v) + 3.5}" text-anchor="end">${escapeHtml(tickText(v))}</text>`,
      );
    }
    for (const metric of panel.metrics) {
      const { color } = TREND_METRICS[metric];
      const value = (i) => (points[i][metric] === null ? null : Number(points[i][metric]));
      if (panel.bars) {
        const pad = band > 4 ? band * 0.15 : 0;
        const barWidth = Math.max(1, band - 2 * pad);
        points.forEach((p, i) => {
          const h = panel.bottom - y(value(i) ?? 0);
          html.push(
            `<rect class="trend-bar" data-start="${p.start}" data-value="${p[metric] ?? ""}" x="${left + i * band + pad}" y="${panel.bottom - h}" width="${barWidth}" height="${h}" fill="${color}"></rect>`,
          );
        });
      } else {
        html.push(this.line(metric, points.length, value, y, color, band >= 10));
      }
    }
    // The legend: the panel's metrics in their colours, top left inside the plot.
    let x = left + 6;
    for (const metric of panel.metrics) {
      const { label, color } = TREND_METRICS[metric];
      html.push(`<text class="trend-legend" x="${x}" y="${panel.top + 11}" fill="${color}">${label}</text>`);
      x += label.length * 8 + 12;
    }
    html.push("</g>");
    return html.join("");
  }

  /** A line through the points' centres, broken where a value is null (no attempts, no PDD). */
  line(metric, count, value, y, color, dots) {
    const { left, band } = this.view;
    const x = (i) => left + (i + 0.5) * band;
    let d = "";
    const lone = [];
    for (let i = 0; i < count; i++) {
      const v = value(i);
      if (v === null) continue;
      const joined = i > 0 && value(i - 1) !== null;
      d += `${joined ? "L" : "M"}${x(i).toFixed(1)} ${y(v).toFixed(1)}`;
      if (dots || (!joined && (i === count - 1 || value(i + 1) === null))) lone.push(i);
    }
    const circles = lone.map((i) => `<circle cx="${x(i)}" cy="${y(value(i))}" r="2.2" fill="${color}"></circle>`);
    return `<path class="trend-line" data-metric="${metric}" d="${d}" stroke="${color}"></path>${circles.join("")}`;
  }

  /** Time labels at round times in the reader's zone, spaced so they do not overlap. */
  timeAxis(top, bottom) {
    const { series, starts, band, left, clock } = this.view;
    const res = RESOLUTIONS[series.resolution] ?? RESOLUTIONS.hour;
    const step = res.steps.find((s) => s * band >= MIN_LABEL_PX) ?? res.steps.at(-1);
    const stepMinutes = step * res.minutes;
    const parts = starts.map(clock);
    const minuteOfDay = (c) => Number(c.hour) * 60 + Number(c.minute);
    let labelled;
    if (res.minutes >= 1440) {
      labelled = starts.map((_, i) => i % step === 0);
    } else if (stepMinutes < 1440) {
      labelled = parts.map((c) => minuteOfDay(c) % stepMinutes === 0);
    } else {
      let midnights = 0; // every (step / a day)-th midnight
      labelled = parts.map((c) => minuteOfDay(c) === 0 && midnights++ % (stepMinutes / 1440) === 0);
    }
    if (!labelled.some(Boolean)) labelled = starts.map((_, i) => i % step === 0); // a zone off the grid
    const html = ['<g class="trend-axis">'];
    labelled.forEach((on, i) => {
      if (!on) return;
      const c = parts[i];
      const x = left + i * band;
      const text = res.minutes >= 1440 || minuteOfDay(c) === 0 ? `${c.day} ${c.month}` : `${c.hour}:${c.minute}`;
      html.push(
        `<line class="trend-grid" x1="${x}" x2="${x}" y1="${top}" y2="${bottom + 4}"></line>`,
        `<text class="trend-tick" x="${x}" y="${this.view.height - 5}" text-anchor="${i === 0 ? "start" : "middle"}">${text}</text>`,
      );
    });
    html.push("</g>");
    return html.join("");
  }

  /** Where an instant falls on the time axis; null outside the range. */
  xOf(ms) {
    const { starts, ends, left, band } = this.view;
    let lo = 0;
    let hi = starts.length - 1;
    if (ms < starts[0] || ms >= ends[hi]) return null;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= ms) lo = mid;
      else hi = mid - 1;
    }
    return left + (lo + (ms - starts[lo]) / (ends[lo] - starts[lo])) * band;
  }

  /** A raise (red, flag down) or clear (green, dot) as a dashed line across the panels. */
  markerMarks(markers, top, bottom) {
    const html = ['<g class="trend-markers">'];
    for (const alert of markers) {
      const x = this.xOf(alertTime(alert));
      if (x === null) continue;
      const raised = alert.state === "raised";
      const head = raised
        ? `<path d="M${x - 4.5} ${top - 9}h9l-4.5 7z"></path>`
        : `<circle cx="${x}" cy="${top - 5}" r="3.5"></circle>`;
      html.push(
        `<g class="trend-marker ${raised ? "raised" : "cleared"}" data-state="${escapeHtml(alert.state)}" data-destination="${escapeHtml(alert.destination)}" data-provider="${escapeHtml(alert.provider ?? "")}" data-metric="${escapeHtml(alert.metric ?? "asr")}" data-at="${escapeHtml(alert.detected_at ?? alert.window_end)}">`,
        `<line x1="${x}" x2="${x}" y1="${top - 2}" y2="${bottom}"></line>${head}</g>`,
      );
    }
    html.push("</g>");
    return html.join("");
  }

  /** One transparent column per point carrying its exact values (what the tooltip shows). */
  hitAreas(points, top, bottom) {
    const { left, band } = this.view;
    const html = ['<g class="trend-hits">'];
    points.forEach((p, i) => {
      const values = Object.keys(TREND_METRICS)
        .filter((m) => m in p)
        .map((m) => ` data-${m}="${escapeHtml(p[m] ?? "")}"`)
        .join("");
      html.push(
        `<rect class="trend-hit" data-index="${i}" data-start="${escapeHtml(p.start)}" data-end="${escapeHtml(p.end)}"${values} x="${left + i * band}" y="${top}" width="${band}" height="${bottom - top}"></rect>`,
      );
    });
    html.push("</g>");
    return html.join("");
  }

  pointAt(clientX) {
    if (!this.view?.band) return;
    const box = this.plot.querySelector("svg").getBoundingClientRect();
    const i = Math.floor((clientX - box.left - this.view.left) / this.view.band);
    this.hover(i >= 0 && i < this.view.starts.length ? i : null);
  }

  key(event) {
    if (!this.view?.band) return;
    const last = this.view.starts.length - 1;
    const moves = { ArrowLeft: -1, ArrowRight: 1, Home: -Infinity, End: Infinity };
    if (event.key === "Escape") return this.hover(null);
    if (!(event.key in moves)) return;
    event.preventDefault();
    const from = this.view.index ?? (moves[event.key] > 0 ? -1 : last + 1);
    this.hover(Math.min(last, Math.max(0, from + moves[event.key])));
  }

  /** Highlight point ``i`` and show its time range, exact values and alerts; null hides. */
  hover(i) {
    const svg = this.plot.querySelector("svg");
    if (!this.view || !svg) return;
    const cursor = svg.querySelector(".trend-cursor");
    const dots = svg.querySelector(".trend-dots");
    this.view.index = i;
    if (i === null) {
      cursor.setAttribute("visibility", "hidden");
      dots.innerHTML = "";
      this.tip.hidden = true;
      return;
    }
    const { series, metrics, markers, left, band, panels, starts, ends } = this.view;
    const point = series.points[i];
    cursor.setAttribute("x", String(left + i * band));
    cursor.setAttribute("width", String(Math.max(band, 1)));
    cursor.setAttribute("visibility", "visible");
    dots.innerHTML = panels
      .filter((p) => !p.bars)
      .flatMap((p) =>
        p.metrics
          .filter((m) => point[m] !== null)
          .map(
            (m) =>
              `<circle cx="${left + (i + 0.5) * band}" cy="${p.y(Number(point[m]))}" r="3.5" fill="${TREND_METRICS[m].color}"></circle>`,
          ),
      )
      .join("");

    const rows = metrics.map(
      (m) =>
        `<div class="tip-row" data-metric="${m}"><svg class="tip-swatch" width="10" height="10"><rect width="10" height="10" rx="2" fill="${TREND_METRICS[m].color}"></rect></svg>` +
        `<span class="tip-name">${TREND_METRICS[m].label}</span><span class="tip-value">${escapeHtml(exact(m, point[m]))}</span></div>`,
    );
    const inside = markers.filter((a) => alertTime(a) >= starts[i] && alertTime(a) < ends[i]);
    for (const alert of inside) {
      const route = alert.provider ? ` via ${alert.provider}` : "";
      const c = this.view.clock(alertTime(alert));
      rows.push(
        `<div class="tip-alert ${alert.state === "raised" ? "raised" : "cleared"}">${(alert.metric ?? "asr").toUpperCase()} alert ${escapeHtml(alert.state)}: ${escapeHtml(alert.destination)}${escapeHtml(route)} at ${c.hour}:${c.minute}</div>`,
      );
    }
    this.tip.innerHTML = `<div class="tip-time">${escapeHtml(this.span(i))}</div>${rows.join("")}`;
    this.tip.dataset.index = String(i);
    this.tip.hidden = false;
    // Beside the cursor, on whichever side has room.
    const x = left + (i + 1) * band + 10;
    const flip = x + this.tip.offsetWidth > this.plot.clientWidth;
    this.tip.style.left = `${flip ? Math.max(0, left + i * band - 10 - this.tip.offsetWidth) : x}px`;
  }

  /** A point's time range in the reader's zone: "Fri 27 Nov 2026 13:00 – 14:00 UTC". */
  span(i) {
    const { starts, ends, clock, series, tz } = this.view;
    const a = clock(starts[i]);
    const day = (c) => `${c.weekday} ${c.day} ${c.month} ${c.year}`;
    if ((RESOLUTIONS[series.resolution]?.minutes ?? 0) >= 1440) return `${day(a)} (${zoneName(tz)})`;
    const b = clock(ends[i]);
    const end = day(b) === day(a) || (b.hour === "00" && b.minute === "00") ? "" : `${day(b)} `;
    return `${day(a)} ${a.hour}:${a.minute} – ${end}${b.hour}:${b.minute} ${zoneName(tz)}`;
  }
}
