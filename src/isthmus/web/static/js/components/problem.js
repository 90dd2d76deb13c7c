// An RFC 9457 problem (or any error) shown to people: title, detail, and the extra fields
// the server adds (e.g. the command gate's `reason`).

import { ApiError } from "../api.js";
import { el } from "../dom.js";

const STANDARD = new Set(["type", "title", "status", "detail", "instance"]);

/** The problem object of an ApiError, of a plain Error, or the object itself. */
export function toProblem(errOrProblem) {
  if (errOrProblem instanceof ApiError) return errOrProblem.problem;
  if (errOrProblem instanceof Error) return { title: "Something went wrong", detail: errOrProblem.message };
  return errOrProblem || { title: "Something went wrong" };
}

/** One line for a form error or a toast: the detail, else the title. */
export function problemText(errOrProblem, fallback = "Something went wrong.") {
  const p = toProblem(errOrProblem);
  return (typeof p.detail === "string" && p.detail) || (typeof p.title === "string" && p.title) || fallback;
}

/** A block with role=alert: title (with the status), detail and the extra fields. */
export function problemMessage(errOrProblem, { testid = "problem" } = {}) {
  const p = toProblem(errOrProblem);
  const extras = Object.entries(p).filter(([k, v]) => !STANDARD.has(k) && v !== null && typeof v !== "object");
  return el(
    "div",
    { class: "problem", role: "alert", "data-testid": testid },
    el("div", { class: "problem-title" },
      el("span", { text: p.title || "Something went wrong" }),
      p.status ? el("span", { class: "problem-status", text: String(p.status) }) : null),
    p.detail && p.detail !== p.title ? el("p", { class: "problem-detail", text: p.detail }) : null,
    extras.length
      ? el("dl", { class: "problem-extra" },
          extras.map(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k, text: String(v) })]))
      : null,
  );
}
