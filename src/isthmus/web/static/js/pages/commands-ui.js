// What the command pages share (js/pages/commands.js, commands-detail.js, approvals.js):
// state and criticality badges, the tag facts a command is checked against, value
// parsing per data type. Not a page: no definePage here.

import { encodePath } from "../api.js";
import { el } from "../dom.js";
import { formatAge, formatClock, formatTimestamp, formatValue, qualityClass } from "../format.js";

/** Every state of a command (GET /api/commands), for people. */
export const STATES = Object.freeze({
  awaiting_approval: { label: "Awaiting approval", kind: "wait" },
  approved: { label: "Approved", kind: "busy" },
  writing: { label: "Writing", kind: "busy" },
  verified: { label: "Verified", kind: "good" },
  mismatch: { label: "Mismatch", kind: "bad" },
  failed: { label: "Failed", kind: "bad" },
  uncertain: { label: "Uncertain", kind: "warn" },
  rejected: { label: "Rejected", kind: "off" },
  expired: { label: "Expired", kind: "off" },
  refused: { label: "Refused", kind: "bad" },
});

/** States after which a command never changes again. */
export const FINAL = new Set(["verified", "mismatch", "failed", "uncertain", "rejected", "expired", "refused"]);

/** What each final state means for the person who sent it. */
export const STATE_HELP = Object.freeze({
  awaiting_approval: "Waiting for a second person (supervisor or admin) to approve it. Nothing has been written yet.",
  approved: "Approved: about to be written.",
  writing: "Being written to the device.",
  verified: "Written, and the device reads back the value sent.",
  mismatch: "Written, but the device reads back another value (clamped or overwritten): check the machine.",
  failed: "Not written: the device refused it, or nothing was sent.",
  uncertain: "The write may or may not have reached the device: check the machine before sending it again.",
  rejected: "Rejected by the approver: never written.",
  expired: "Nobody approved it in time: never written.",
  refused: "Refused by the gate: never written.",
});

/** The roles that may send commands (the server decides per tag criticality and scope). */
export const COMMAND_ROLES = Object.freeze(["operator", "engineer", "supervisor", "admin"]);
/** The roles that approve critical commands (never their own). */
export const APPROVER_ROLES = Object.freeze(["supervisor", "admin"]);

export function stateBadge(state) {
  const s = STATES[state] || { label: state || "—", kind: "off" };
  return el("span", { class: `state-badge state-${s.kind}`, "data-state": state, text: s.label });
}

export function criticalityBadge(criticality) {
  return el("span", { class: `crit-badge crit-${criticality || "low"}`, text: criticality || "—" });
}

const NUMBER = new Set(["float32", "float64", "int16", "uint16", "int32", "uint32", "int64", "uint64"]);
const INTEGER = new Set(["int16", "uint16", "int32", "uint32", "int64", "uint64"]);

/** "bool" | "enum" | "integer" | "number" | "string": how a tag's value is entered. */
export function valueKind(tag) {
  const t = tag.value_type || tag.data_type;
  if (t === "bool") return "bool";
  if (tag.enum && Object.keys(tag.enum).length) return "enum";
  if (INTEGER.has(t)) return "integer";
  if (NUMBER.has(t)) return "number";
  return "string";
}

/** {value} or {error} from what was typed, checked against the tag's type and limits
 * (the gate checks again; this only saves a round trip). */
export function parseValue(tag, text) {
  const kind = valueKind(tag);
  const raw = String(text ?? "").trim();
  if (kind === "string") return { value: String(text ?? "") };
  if (raw === "") return { error: "Enter a value." };
  if (kind === "bool") {
    if (raw === "true" || raw === "false") return { value: raw === "true" };
    return { error: "Choose true or false." };
  }
  const value = Number(raw);
  if (!Number.isFinite(value)) return { error: "Enter a number." };
  if ((kind === "integer" || kind === "enum") && !Number.isInteger(value)) return { error: "Enter a whole number." };
  const [lo, hi] = allowedRange(tag) || [null, null];
  if (lo !== null && (value < lo || value > hi)) {
    return { error: `Outside the allowed ${fmtLimits([lo, hi], tag.unit)}.` };
  }
  return { value };
}

/** The narrower of the engineering range and the write limits ([lo, hi] or null). */
export function allowedRange(tag) {
  const r = Array.isArray(tag.range) ? tag.range : null;
  const w = Array.isArray(tag.write_limits) ? tag.write_limits : null;
  if (r && w) return [Math.max(r[0], w[0]), Math.min(r[1], w[1])];
  return w || r;
}

export function fmtNumber(n) {
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toLocaleString("en-US", { maximumFractionDigits: 6 });
}

export function fmtLimits(limits, unit = "") {
  if (!Array.isArray(limits)) return "—";
  return `${fmtNumber(limits[0])} … ${fmtNumber(limits[1])}${unit ? ` ${unit}` : ""}`;
}

/** A command's or a sample's value with the tag's unit and enum label. */
export function fmtValue(value, tag) {
  if (value === null || value === undefined) return "—";
  if (!tag) return typeof value === "number" ? fmtNumber(value) : String(value);
  const text = formatValue(value, tag.value_type, tag.enum);
  return tag.unit && typeof value === "number" ? `${text} ${tag.unit}` : text;
}

/** "10 min", "1 h 30 min" from seconds or a duration string as the API gives it. */
export function fmtDuration(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "string") return value;
  const s = Number(value);
  if (s < 60) return `${fmtNumber(s)} s`;
  if (s < 3600) return `${fmtNumber(Math.round((s / 60) * 10) / 10)} min`;
  return `${fmtNumber(Math.round((s / 3600) * 10) / 10)} h`;
}

/** The last part of a UNS path and the equipment above it. */
export function splitPath(path) {
  const i = path.lastIndexOf("/");
  return { name: path.slice(i + 1), equipment: i < 0 ? "" : path.slice(0, i) };
}

/** A UNS path in <code> that breaks only after its slashes. */
export function pathNode(path) {
  const parts = path.split("/");
  return el("code", { class: "path", title: path },
    parts.map((part, i) => (i < parts.length - 1 ? [`${part}/`, el("wbr")] : part)));
}

/** A tag cell: name in bold, its equipment path under it (title: the full path). */
export function tagCell(path) {
  const { name, equipment } = splitPath(path);
  return el("div", { class: "tag-cell", title: path },
    el("span", { class: "tag-cell-name", text: name }),
    el("span", { class: "tag-cell-eq", text: equipment }));
}

/** `GET /api/tags/{path}/last` → {value, quality, ts} or null (no sample yet, or 404). */
export async function fetchLast(api, path, signal) {
  try {
    const v = await api.get(`/api/tags/${encodePath(path)}/last`, { signal });
    return { value: v.value, quality: v.quality, ts: Date.parse(v.timestamp) };
  } catch (err) {
    if (err && err.status === 404) return null;
    throw err;
  }
}

/** The current value as a node: value, quality dot and age. */
export function currentValueNode(last, tag, testid = null) {
  if (!last) return el("span", { class: "muted", "data-testid": testid, text: "no value yet" });
  return el("span", { class: "current-value", "data-testid": testid },
    el("span", { class: "current-value-v", text: fmtValue(last.value, tag) }),
    el("span", { class: `quality ${qualityClass(last.quality)}` }, el("span", { class: "dot" }), last.quality),
    el("span", { class: "muted", text: formatAge(Date.now() - last.ts) }));
}

/** `node.replaceChildren(...)` leaving out null, undefined and false (which it would
 * otherwise write as text). */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** A definition list from [[term, value | Node], ...] (null rows left out). */
export function factList(rows, cls = "facts") {
  return el("dl", { class: cls },
    rows.filter(Boolean).map(([dt, dd, testid]) => [
      el("dt", { text: dt }),
      el("dd", { "data-testid": testid || null }, dd instanceof Node ? dd : dd === null || dd === undefined ? "—" : String(dd)),
    ]));
}

/** The limits a command on `tag` is checked against, as fact rows. */
export function limitRows(tag) {
  return [
    ["Range", fmtLimits(tag.range, tag.unit)],
    ["Write limits", tag.write_limits ? fmtLimits(tag.write_limits, tag.unit) : "none beyond the range"],
    ["Max step", tag.max_step ? `${fmtNumber(tag.max_step)}${tag.unit ? ` ${tag.unit}` : ""} per command` : "none"],
    ["Min interval", tag.min_interval ? fmtDuration(tag.min_interval) : "none"],
  ];
}

export const when = (iso) => (iso ? formatTimestamp(iso) : "—");

/** "14:03:27" today, "2024-05-02 14:03" before (the title of the cell has it all). */
export function whenShort(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "—";
  const full = formatTimestamp(iso);
  const today = new Date().toDateString() === d.toDateString();
  return el("span", { title: full, text: today ? formatClock(d.getTime()) : full.slice(0, 16) });
}

/** A hex id for POST /api/commands `id`: a retry with it never writes twice.
 * (getRandomValues, not randomUUID: plant UIs are often served over plain http.) */
export function newCommandId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `ui-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}
