// Exact formatting of the API's figures, shared by the table, the trend chart and the cause
// panel. Money, percentages and durations arrive as exact decimal strings and are only ever
// handled as strings here: nothing turns a charge into a float, for display, sorting or CSV.

export const DASH = "–";

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

/** "-1234.5" -> {neg: true, int: "1234", frac: "5"}; null for anything else. */
export function parseDecimal(value) {
  if (value === null || value === undefined) return null;
  const match = DECIMAL.exec(String(value));
  if (!match) return null;
  const int = match[2].replace(/^0+(?=\d)/, "");
  const frac = match[3] ?? "";
  const zero = /^0*$/.test(int + frac);
  return { neg: match[1] === "-" && !zero, int, frac };
}

/** "1234567" -> "1,234,567" */
export function groupDigits(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export function formatInt(value) {
  if (value === null || value === undefined) return DASH;
  const text = String(value);
  return text.startsWith("-") ? `-${groupDigits(text.slice(1))}` : groupDigits(text);
}

/** "1234.500000" -> "1,234.500000": thousands separators, every decimal place kept. */
export function formatDecimal(value) {
  const d = parseDecimal(value);
  if (!d) return value === null || value === undefined ? DASH : String(value);
  return `${d.neg ? "-" : ""}${groupDigits(d.int)}${d.frac ? `.${d.frac}` : ""}`;
}

/** BigInt ``n / d`` rounded half to even (``n >= 0``, ``d > 0``). */
function divideHalfEven(n, d) {
  const q = n / d;
  const twice = (n % d) * 2n;
  return twice > d || (twice === d && q % 2n === 1n) ? q + 1n : q;
}

/** A decimal string rounded half to even at ``places`` decimals, as a plain decimal string. */
export function roundDecimal(value, places) {
  const d = parseDecimal(value);
  if (!d) return null;
  const scaled = divideHalfEven(BigInt(d.int + d.frac), 10n ** BigInt(Math.max(0, d.frac.length - places)));
  const digits = (scaled * 10n ** BigInt(Math.max(0, places - d.frac.length))).toString().padStart(places + 1, "0");
  const int = digits.slice(0, digits.length - places);
  const text = places ? `${int}.${digits.slice(-places)}` : int;
  return d.neg && scaled !== 0n ? `-${text}` : text;
}

const currencyDigits = new Map();

/** The decimals a currency is usually shown with (ISO 4217 minor unit; 2 if unknown). */
export function minorDigits(currency) {
  if (!currencyDigits.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    } catch {
      // not an ISO 4217 code the browser knows: cents
    }
    currencyDigits.set(currency, digits);
  }
  return currencyDigits.get(currency);
}

/** Money at the currency's usual decimals, half to even ("1,234.57"); the exact sum is ``formatDecimal``. */
export function formatMoney(value, currency) {
  if (value === null || value === undefined) return DASH;
  const rounded = roundDecimal(value, currency ? minorDigits(currency) : 2);
  return rounded === null ? String(value) : formatDecimal(rounded);
}

/** Decimal minutes of a seconds string, 2 places, half to even: what finance bills in. */
export function minutesOf(seconds) {
  const d = parseDecimal(seconds);
  if (!d || d.neg) return null;
  const hundredths = divideHalfEven(BigInt(d.int + d.frac) * 100n, 60n * 10n ** BigInt(d.frac.length));
  return `${hundredths / 100n}.${(hundredths % 100n).toString().padStart(2, "0")}`;
}

export function formatPct(value) {
  return value === null || value === undefined ? DASH : `${formatDecimal(value)}%`;
}

/** Whole seconds of a decimal seconds string, rounded half-even like the API's ``duration_hms``. */
function wholeSeconds(value) {
  const d = parseDecimal(value);
  if (!d) return null;
  const whole = Number(d.int); // exact below 2^53 seconds
  const half = d.frac[0] === "5" && /^0*$/.test(d.frac.slice(1));
  const up = d.frac[0] > "5" || (d.frac[0] === "5" && (!half || whole % 2 === 1));
  return whole + (up ? 1 : 0);
}

/** Seconds string -> "m:ss" (or "h:mm:ss" from an hour on; with ``minutes``, always "m:ss"). */
export function formatDuration(value, minutes = false) {
  const total = wholeSeconds(value);
  if (total === null) return DASH;
  const h = Math.floor(total / 3600);
  const s = String(total % 60).padStart(2, "0");
  if (minutes) return `${groupDigits(String(Math.floor(total / 60)))}:${s}`;
  const m = Math.floor((total % 3600) / 60);
  if (h > 0) return `${groupDigits(String(h))}:${String(m).padStart(2, "0")}:${s}`;
  return `${m}:${s}`;
}

/** Exact comparison of two decimal strings. */
export function compareDecimal(a, b) {
  const x = parseDecimal(a);
  const y = parseDecimal(b);
  if (x.neg !== y.neg) return x.neg ? -1 : 1;
  const sign = x.neg ? -1 : 1;
  if (x.int.length !== y.int.length) return sign * (x.int.length - y.int.length);
  if (x.int !== y.int) return sign * (x.int < y.int ? -1 : 1);
  const width = Math.max(x.frac.length, y.frac.length);
  const fx = x.frac.padEnd(width, "0");
  const fy = y.frac.padEnd(width, "0");
  return fx === fy ? 0 : sign * (fx < fy ? -1 : 1);
}

/** Text made safe for HTML (and SVG) markup and attribute values. */
export function escapeHtml(value) {
  return String(value).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}
