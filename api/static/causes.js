// The cause panel: the final SIP codes of the selection's attempts against the previous period
// of the same length, so a drop in ASR shows its cause (503s from one carrier, 404s after a
// routing change) next to the chart. The API sorts the codes by growth in share; the panel
// keeps that order and marks the codes that grew.

import { DASH, compareDecimal, escapeHtml, formatInt } from "./format.js";

const NO_CODE_LABEL = "No SIP code on the CDR";

/** ``[from, to)`` as days ("25 Nov – 26 Nov 2026", ``to`` exclusive) or as times in ``tz``. */
export function periodText(fromIso, toIso, tz) {
  const from = new Date(fromIso);
  const to = new Date(toIso);
  const parts = (date, withTime) =>
    Object.fromEntries(
      new Intl.DateTimeFormat("en-GB", {
        timeZone: tz,
        day: "numeric",
        month: "short",
        year: "numeric",
        ...(withTime ? { hour: "2-digit", minute: "2-digit", hourCycle: "h23" } : {}),
      })
        .formatToParts(date)
        .map((p) => [p.type, p.value]),
    );
  const a = parts(from, true);
  const b = parts(to, true);
  const day = (c) => `${c.day} ${c.month} ${c.year}`;
  if (a.hour === "00" && a.minute === "00" && b.hour === "00" && b.minute === "00") {
    const last = parts(new Date(to.getTime() - 60_000), false); // the day before `to`
    if (day(a) === day(last)) return day(a);
    if (a.year !== last.year) return `${day(a)} – ${day(last)}`;
    return `${a.month === last.month ? a.day : `${a.day} ${a.month}`}–${day(last)}`;
  }
  return `${day(a)} ${a.hour}:${a.minute} – ${day(b)} ${b.hour}:${b.minute}`;
}

function pct(value) {
  return value === null || value === undefined ? DASH : `${value}%`;
}

/** A change in share as "+58.50" / "−1.50" (the API's exact string, signed). */
function points(value) {
  if (value === null || value === undefined) return DASH;
  const sign = compareDecimal(value, "0");
  const magnitude = String(value).replace(/^-/, "");
  return `${sign > 0 ? "+" : sign < 0 ? "\u2212" : ""}${magnitude}`;
}

/** Draw a ``GET /v1/causes`` answer into ``root`` (a table and a caption), times in ``tz``. */
export function renderCauses(root, body, tz) {
  const codes = body.codes ?? [];
  const before = body.previous_attempts;
  const previous = body.previous ? periodText(body.previous.from, body.previous.to, tz) : null;
  const caption =
    `<p class="causes-caption"><span title="${escapeHtml(periodText(body.from, body.to, tz))}"><strong>${formatInt(body.attempts)}</strong> attempts now</span>` +
    (previous
      ? ` · <span>${
          before === null || before === undefined
            ? "the period before is beyond retention"
            : `<strong>${formatInt(before)}</strong> before`
        } (${escapeHtml(previous)})</span>`
      : "") +
    "</p>";
  if (!codes.length) {
    root.innerHTML = `${caption}<p class="causes-empty">No attempts in this selection.</p>`;
    return;
  }
  const rows = codes.map((code) => {
    const change = code.change_points;
    const grew = change !== null && change !== undefined && compareDecimal(change, "0") > 0;
    const label = code.code === "none" ? (code.label ?? NO_CODE_LABEL) : (code.label ?? "");
    const data = [
      ["code", code.code],
      ["count", code.count],
      ["share", code.share],
      ["previous-count", code.previous_count],
      ["previous-share", code.previous_share],
      ["change", change],
    ]
      .map(([name, value]) => ` data-${name}="${escapeHtml(value ?? "")}"`)
      .join("");
    return (
      `<tr${grew ? ' class="grew"' : ""}${data}>` +
      `<th scope="row" class="code">${escapeHtml(code.code)}</th>` +
      `<td class="label" title="${escapeHtml(label)}">${escapeHtml(label)}</td>` +
      `<td>${formatInt(code.count)}</td><td>${pct(code.share)}</td>` +
      `<td class="was">${formatInt(code.previous_count)}</td><td class="was">${pct(code.previous_share)}</td>` +
      `<td class="change">${points(change)}</td></tr>`
    );
  });
  root.innerHTML =
    caption +
    `<table class="causes-table"><thead><tr>` +
    `<th scope="col" class="code">Code</th><th scope="col" class="label"></th>` +
    `<th scope="col" title="Attempts ending with this code">Now</th><th scope="col" title="Share of the attempts">%</th>` +
    `<th scope="col" class="was" title="The previous period of the same length">Before</th><th scope="col" class="was">%</th>` +
    `<th scope="col" title="Change in share, in percentage points">\u0394 pts</th>` +
    `</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}
