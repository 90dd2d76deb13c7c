// What the identity pages share (js/pages/account.js, users.js, tokens.js): role
// descriptions, scopes as text and as input, a copy button. Not a page.

import { ApiError, EXPIRED, endSession, getToken, isQuiet } from "../api.js";
import { el } from "../dom.js";
import { field } from "../components/field.js";
import { problemMessage } from "../components/problem.js";
import { toast } from "../components/toast.js";

export { fill } from "./commands-ui.js";

/** What each role may do (docs/permissions.md is the full matrix), and its OPC UA Part 3 role. */
export const ROLE_HELP = Object.freeze({
  viewer: "reads tags, history and events (OPC UA Observer)",
  operator: "also sends commands to low and medium criticality tags (OPC UA Operator)",
  engineer: "also commands high criticality tags and exports history (OPC UA Engineer)",
  supervisor: "commands every tag and approves others' critical commands (OPC UA Supervisor)",
  security_admin: "manages users, API tokens and reads the audit log; sends no commands (OPC UA SecurityAdmin)",
  admin: "everything (OPC UA ConfigureAdmin)",
});

/** An API time (ISO string, or ns since the epoch) as epoch ms (null: none). */
export const apiMs = (v) => (v === null || v === undefined ? null : typeof v === "number" ? v / 1e6 : Date.parse(v));

/** The role select of a form, with the chosen role's description under it. */
export function roleField(options, testid) {
  const role = field({ label: "Role", name: "role", type: "select", options, value: "viewer", testid });
  const help = el("p", { class: "field-hint", text: ROLE_HELP.viewer });
  role.input.addEventListener("change", () => (help.textContent = ROLE_HELP[role.value] || ""));
  role.element.insertBefore(help, role.element.querySelector(".field-error"));
  return role;
}

/** A panel: its head (the title, `inTitle` beside it, `right` at its end), then `body`. */
export function panel(attrs, { title, inTitle = null, right = null }, ...body) {
  return el("section", attrs,
    el("div", { class: "panel-head" },
      el("div", { class: "panel-title" }, el("h2", { text: title }), inTitle),
      right),
    ...body);
}

/** Show an API error (not a quiet one: aborted, session over) in `box`. */
export function showProblemIn(box, err, testid, wrap = true) {
  if (isQuiet(err)) return;
  const message = problemMessage(err, { testid });
  box.replaceChildren(wrap ? el("div", { class: "panel-body" }, message) : message);
}

/** "whole enterprise" for no scopes, else the prefixes. */
export function scopesText(scopes) {
  if (!Array.isArray(scopes) || scopes.length === 0) return "whole enterprise";
  return scopes.join(", ");
}

/** The hierarchy prefixes typed one per line or comma-separated ([] = everything). */
export function parseScopes(text) {
  return [...new Set(String(text || "").split(/[\n,]+/).map((s) => s.trim().replace(/^\/+|\/+$/g, "")).filter(Boolean))];
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain http on a plant network: no Clipboard API; the old way still works.
  const area = el("textarea", { value: text, readOnly: true, class: "copy-buffer" });
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused");
}

/** A button that copies `get()` and says so. */
export function copyButton(get, label = "Copy", testid = null) {
  const button = el("button", { class: "btn btn-secondary btn-copy", type: "button", text: label, "data-testid": testid });
  button.addEventListener("click", async () => {
    try {
      await copyText(get());
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = label), 1500);
    } catch {
      toast("The browser refused to copy: select the text and copy it by hand.", { kind: "error" });
    }
  });
  return button;
}

/** POST for a form whose refusal is an answer about what was typed (a wrong one-time
 * code, a wrong current password: 422 with reason `mfa_invalid` or `credentials`), not the
 * end of the session; a 401 with those reasons (older servers) is treated the same.
 * Resolves to the JSON body (null: 204). */
export async function postAnswer(path, body, signal) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${getToken()}`,
        "Content-Type": "application/json",
        Accept: "application/json, application/problem+json",
      },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, { title: "The server cannot be reached.", detail: "The server cannot be reached.", status: 0 });
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.ok) return data;
  const problem = data && typeof data === "object" && !Array.isArray(data) ? { ...data } : {};
  if (typeof problem.status !== "number") problem.status = response.status;
  if (typeof problem.title !== "string") problem.title = response.statusText || `HTTP ${response.status}`;
  if (typeof problem.detail !== "string") problem.detail = problem.title;
  if (response.status === 401 && !["mfa_invalid", "credentials"].includes(problem.reason)) endSession(EXPIRED);
  throw new ApiError(response.status, problem);
}
