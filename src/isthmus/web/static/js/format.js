// How values, qualities and ages are written on every page.

const INT_TYPES = new Set(["int16", "uint16", "int32", "uint32", "int64", "uint64"]);

/** True when `path` is `prefix` or below it in the UNS ("" = everything). */
export function under(path, prefix) {
  return !prefix || path === prefix || path.startsWith(prefix + "/");
}

/** The CSS class of an OPC UA quality name: q-good, q-uncertain, q-bad or q-none. */
export function qualityClass(name) {
  if (!name) return "q-none";
  if (name.startsWith("Good")) return "q-good";
  if (name.startsWith("Uncertain")) return "q-uncertain";
  return "q-bad";
}

/** A tag value as shown to people: enum labels, booleans, integers, 3 significant decimals. */
export function formatValue(value, dataType, labels = null) {
  if (value === null || value === undefined) return "—";
  if (labels && typeof value === "number" && labels[String(Math.round(value))] !== undefined) {
    return `${labels[String(Math.round(value))]} (${Math.round(value)})`;
  }
  if (dataType === "bool") return value === true || value === 1 ? "true" : "false";
  if (typeof value !== "number") return String(value);
  if (INT_TYPES.has(dataType)) return Math.round(value).toLocaleString("en-US");
  const abs = Math.abs(value);
  const digits = abs >= 1000 ? 1 : abs >= 10 ? 2 : 3;
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A tag whose values are text (no trend). */
export function isTextTag(tag) {
  return Boolean(tag && tag.value_type === "string");
}

/** "4.2 s ago", "3 min ago", ... */
export function formatAge(ms) {
  if (ms < 0) ms = 0;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)} s ago`;
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

/** Local wall-clock time "HH:MM:SS" (or "HH:MM" without seconds). */
export function formatClock(ms, seconds = true) {
  const d = new Date(ms);
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return seconds ? `${hm}:${pad2(d.getSeconds())}` : hm;
}

/** An ISO timestamp (or epoch ms) as local "YYYY-MM-DD HH:MM:SS". */
export function formatTimestamp(value) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return "—";
  const date = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  return `${date} ${formatClock(d.getTime())}`;
}
