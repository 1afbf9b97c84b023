// One CSV cell as Breakout writes it: the rule of breakout/csv_cells.py, which the API's
// format=csv follows, tested with it against the same cases (tests/csv_cells.json).
//
// A cell starting with a formula character (= + - @ tab CR) gets a leading ' so a spreadsheet
// shows it as text, unless the whole cell is a plain decimal number (-1.500000 is a loss, not a
// formula); then a cell holding " , CR or LF is quoted.

const FORMULA = /^(?!-[0-9]+(?:\.[0-9]+)?$)[=+\-@\t\r]/;
const NEEDS_QUOTES = /[",\r\n]/;

/** ``value`` (string, integer, null) as one CSV cell. */
export function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (FORMULA.test(text)) text = `'${text}`;
  return NEEDS_QUOTES.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}
