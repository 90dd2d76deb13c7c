// Commands (#/commands): the command form (a writable tag, a value and a reason, then a
// confirmation with the current value, the new one and the limits), the result of the
// command sent (followed until it is final), and the command history (auto-refreshed).
// Data: GET /api/tags, GET /api/tags/{path}/last, the live stream, POST /api/commands,
// GET /api/commands[/{id}]. The gate decides; this page only explains and asks.

import { reportError, isQuiet } from "../api.js";
import { el } from "../dom.js";
import { formatClock } from "../format.js";
import { definePage, navigate } from "../router.js";
import { confirmDialog } from "../components/dialog.js";
import { problemMessage } from "../components/problem.js";
import { dataTable } from "../components/table.js";
import {
  COMMAND_ROLES,
  FINAL,
  STATES,
  STATE_HELP,
  allowedRange,
  criticalityBadge,
  currentValueNode,
  factList,
  fetchLast,
  fill,
  fmtLimits,
  fmtNumber,
  fmtValue,
  limitRows,
  newCommandId,
  pathNode,
  parseValue,
  splitPath,
  stateBadge,
  tagCell,
  valueKind,
  when,
  whenShort,
} from "./commands-ui.js";

const REFRESH_MS = 2000;

export default definePage({
  path: "/commands",
  label: "Commands",
  roles: ["operator", "engineer", "supervisor", "security_admin", "admin"],
  styles: ["/static/css/pages/commands.css"],
  render: (container, ctx) => new CommandsPage(container, ctx).mount(),
});

class CommandsPage {
  constructor(container, ctx) {
    this.container = container;
    this.ctx = ctx;
    this.api = ctx.api;
    this.tags = new Map(); // path -> tag (every tag: the history formats values with units)
    this.writable = [];
    this.selected = null; // the tag of the form
    this.last = null; // {value, quality, ts} of the selected tag
    this.result = null; // the command sent from this page, followed until final
    this.retry = null; // a POST whose outcome is unknown (server unreachable): same id again
    this.loading = false;
    this.dom = {};
  }

  async mount() {
    const { ctx } = this;
    const mayCommand = COMMAND_ROLES.includes(ctx.role);
    const body = el("div", { class: "page-body" });
    this.container.append(body);
    const tags = await this.api.get("/api/tags", { signal: ctx.signal });
    for (const t of tags) this.tags.set(t.path, t);
    this.writable = tags.filter((t) => t.writable).sort((a, b) => a.path.localeCompare(b.path));

    const layout = el("div", { class: "commands-layout" });
    body.append(layout);
    // The result of the command sent sits above the history, where it stays in sight.
    this.dom.result = el("div", { class: "command-result", "data-testid": "command-result", hidden: true });
    if (mayCommand) layout.append(this.buildForm());
    else layout.classList.add("history-only");
    layout.append(el("div", { class: "commands-side" }, this.dom.result, this.buildHistory(mayCommand)));

    const off = [];
    if (mayCommand && this.writable.length) {
      const wanted = ctx.query.tag && this.tags.get(ctx.query.tag)?.writable ? ctx.query.tag : this.writable[0].path;
      this.dom.tag.value = wanted;
      this.selectTag(wanted);
      off.push(ctx.stream.on("samples", (samples) => this.onSamples(samples)));
      off.push(ctx.stream.on("open", () => this.refreshLast()));
    }
    await this.loadHistory();
    const timer = setInterval(() => this.tick(), REFRESH_MS);
    const ages = setInterval(() => this.paintCurrent(), 1000);
    return () => {
      clearInterval(timer);
      clearInterval(ages);
      for (const fn of off) fn();
      ctx.stream.subscribe([]);
    };
  }

  // ------------------------------------------------------------------ the form

  buildForm() {
    const select = el("select", { id: "command-tag", name: "tag", "data-testid": "command-tag", required: true });
    const groups = new Map();
    for (const t of this.writable) {
      const { name, equipment } = splitPath(t.path);
      if (!groups.has(equipment)) groups.set(equipment, el("optgroup", { label: equipment }));
      groups.get(equipment).append(el("option", { value: t.path, text: `${name}${t.unit ? ` (${t.unit})` : ""} · ${t.criticality}` }));
    }
    select.append(...groups.values());
    select.addEventListener("change", () => this.selectTag(select.value));
    this.dom.tag = select;

    this.dom.facts = el("div", { class: "tag-facts", "data-testid": "tag-facts" });
    this.dom.valueSlot = el("div", { class: "value-slot" });
    this.dom.reason = el("textarea", {
      id: "command-reason", name: "reason", rows: 2, maxLength: 1000, required: true,
      placeholder: "e.g. new bottle size for order 4711",
      "data-testid": "command-reason",
    });
    this.dom.reasonError = el("p", { class: "field-error", role: "alert" });
    this.dom.review = el("button", { class: "btn btn-primary", type: "submit", "data-testid": "command-review", text: "Review command…" });
    const form = el("form", { class: "command-form", noValidate: true, "data-testid": "command-form" },
      el("div", { class: "field" }, el("label", { for: "command-tag", text: "Writable tag" }), select),
      this.dom.facts,
      this.dom.valueSlot,
      el("div", { class: "field" },
        el("label", { for: "command-reason", text: "Reason" }),
        this.dom.reason,
        el("p", { class: "field-hint", text: "Recorded in the audit log and shown to the approver." }),
        this.dom.reasonError),
      el("div", { class: "form-actions" }, this.dom.review));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.review().catch((err) => this.showProblem(err));
    });

    const content = this.writable.length
      ? [form]
      : [el("p", { class: "empty", "data-testid": "no-writable", text: "No writable tag is visible to you: the plant configuration marks tags `writable: true`." })];
    return el("section", { class: "panel command-panel", "aria-label": "New command" },
      el("div", { class: "panel-head" }, el("div", { class: "panel-title" }, el("h2", { text: "New command" }))),
      el("div", { class: "panel-body" }, content));
  }

  selectTag(path) {
    const tag = this.tags.get(path);
    this.selected = tag;
    this.last = null;
    this.buildValueField(tag);
    this.paintFacts();
    this.ctx.stream.subscribe([path]);
    this.refreshLast();
  }

  buildValueField(tag) {
    const kind = valueKind(tag);
    let input;
    if (kind === "bool") {
      input = el("select", { id: "command-value", name: "value" },
        el("option", { value: "", text: "Choose…" }),
        el("option", { value: "true", text: "true" }),
        el("option", { value: "false", text: "false" }));
    } else if (kind === "enum") {
      input = el("select", { id: "command-value", name: "value" },
        el("option", { value: "", text: "Choose…" }),
        Object.entries(tag.enum).map(([v, label]) => el("option", { value: v, text: `${label} (${v})` })));
    } else if (kind === "string") {
      input = el("input", { id: "command-value", name: "value", type: "text", maxLength: 256, autocomplete: "off" });
    } else {
      const range = allowedRange(tag);
      input = el("input", {
        id: "command-value", name: "value", type: "number", autocomplete: "off",
        step: kind === "integer" ? "1" : "any",
        min: range ? String(range[0]) : undefined, max: range ? String(range[1]) : undefined,
      });
    }
    input.setAttribute("data-testid", "command-value");
    const range = allowedRange(tag);
    const hint = kind === "number" || kind === "integer"
      ? range ? `Allowed: ${fmtLimits(range, tag.unit)}${tag.max_step ? `, at most ${fmtNumber(tag.max_step)} per command` : ""}.` : "Any number."
      : kind === "string" ? "Text, sent as typed." : "";
    this.dom.value = input;
    this.dom.valueError = el("p", { class: "field-error", role: "alert", "data-testid": "command-value-error" });
    this.dom.valueSlot.replaceChildren(el("div", { class: "field" },
      el("label", { for: "command-value", text: `New value${tag.unit ? ` (${tag.unit})` : ""}` }),
      input,
      hint ? el("p", { class: "field-hint", text: hint }) : null,
      this.dom.valueError));
    input.addEventListener("input", () => this.setValueError(""));
  }

  setValueError(message) {
    this.dom.valueError.textContent = message;
    this.dom.value.setAttribute("aria-invalid", message ? "true" : "false");
  }

  paintFacts() {
    const tag = this.selected;
    if (!tag) return;
    const critical = tag.criticality === "critical";
    this.dom.current = el("span");
    fill(this.dom.facts,
      tag.description ? el("p", { class: "tag-desc", text: tag.description }) : null,
      factList([
        ["Path", pathNode(tag.path)],
        ["Criticality", criticalityBadge(tag.criticality), "tag-criticality"],
        ["Current value", this.dom.current],
        ...limitRows(tag),
      ]),
      critical
        ? el("p", { class: "notice notice-approval", "data-testid": "tag-needs-approval" },
            "Critical tag: a second person (supervisor or admin) must approve the command before it is written.")
        : null,
    );
    this.paintCurrent();
  }

  paintCurrent() {
    if (!this.dom.current || !this.selected) return;
    this.dom.current.replaceChildren(currentValueNode(this.last, this.selected, "tag-current"));
  }

  async refreshLast() {
    const tag = this.selected;
    if (!tag) return;
    try {
      const last = await fetchLast(this.api, tag.path, this.ctx.signal);
      if (this.selected === tag && last && (!this.last || last.ts >= this.last.ts)) this.last = last;
      this.paintCurrent();
    } catch (err) {
      reportError(err);
    }
  }

  onSamples(samples) {
    const tag = this.selected;
    if (!tag) return;
    for (const s of samples) {
      if (s.path !== tag.path) continue;
      const ts = Date.parse(s.timestamp);
      if (!this.last || ts >= this.last.ts) this.last = { value: s.value, quality: s.quality, ts };
    }
    this.paintCurrent();
  }

  async review() {
    const tag = this.selected;
    if (!tag) return;
    const parsed = parseValue(tag, this.dom.value.value);
    this.setValueError(parsed.error || "");
    const reason = this.dom.reason.value.trim();
    this.dom.reasonError.textContent = reason ? "" : "Say why: the reason is recorded and shown to the approver.";
    if (parsed.error) return this.dom.value.focus();
    if (!reason) return this.dom.reason.focus();
    this.dom.review.disabled = true;
    try {
      const last = await fetchLast(this.api, tag.path, this.ctx.signal);
      if (last) this.last = last;
      this.paintCurrent();
      const critical = tag.criticality === "critical";
      const ok = await confirmDialog({
        title: critical ? "Request approval for this command?" : "Send this command to the machine?",
        body: this.confirmBody(tag, parsed.value, reason, last),
        confirmLabel: critical ? "Request approval" : "Send command",
        testid: "command-confirm",
      });
      if (!ok) return;
      await this.send({ tag: tag.path, value: parsed.value, reason, id: newCommandId() });
    } finally {
      this.dom.review.disabled = false;
    }
  }

  confirmBody(tag, value, reason, last) {
    const critical = tag.criticality === "critical";
    let change = null;
    let stepWarning = null;
    if (last && typeof last.value === "number" && typeof value === "number") {
      const delta = value - last.value;
      change = `${delta >= 0 ? "+" : "−"}${fmtNumber(Math.abs(Math.round(delta * 1e6) / 1e6))}${tag.unit ? ` ${tag.unit}` : ""}`;
      if (tag.max_step && Math.abs(delta) > tag.max_step) {
        stepWarning = el("p", { class: "notice notice-warn", "data-testid": "confirm-step-warning" },
          `The change is larger than the max step (${fmtNumber(tag.max_step)}${tag.unit ? ` ${tag.unit}` : ""}): the gate will refuse it.`);
      }
    }
    return [
      el("div", { class: "confirm-change" },
        el("div", { class: "confirm-box" },
          el("span", { class: "confirm-label", text: "Current" }),
          el("span", { class: "confirm-value", "data-testid": "confirm-current", text: last ? fmtValue(last.value, tag) : "no value yet" })),
        el("span", { class: "confirm-arrow", "aria-hidden": "true", text: "→" }),
        el("div", { class: "confirm-box confirm-box-new" },
          el("span", { class: "confirm-label", text: "New" }),
          el("span", { class: "confirm-value", "data-testid": "confirm-new", text: fmtValue(value, tag) }),
          change ? el("span", { class: "confirm-delta", text: change }) : null)),
      factList([
        ["Tag", pathNode(tag.path), "confirm-tag"],
        ["Criticality", criticalityBadge(tag.criticality)],
        ...limitRows(tag).map(([k, v], i) => [k, v, i === 0 ? "confirm-limits" : null]),
        ["Reason", reason],
      ], "facts facts-compact"),
      stepWarning,
      critical
        ? el("p", { class: "notice notice-approval", "data-testid": "confirm-approval" },
            "This tag is critical: the command will wait for a second person with the supervisor or admin role to approve it. Nothing is written before that, and it expires if nobody approves it in time.")
        : el("p", { class: "notice", "data-testid": "confirm-direct" },
            "The value is written once, read back from the device and compared; the result shows here."),
    ];
  }

  async send(body) {
    this.retry = null;
    this.dom.review.disabled = true;
    try {
      const cmd = await this.api.post("/api/commands", body, { signal: this.ctx.signal });
      this.showResult(cmd);
      this.dom.value.value = "";
      this.loadHistory().catch(reportError);
    } catch (err) {
      if (isQuiet(err)) return;
      if (err && err.status === 0) this.retry = body; // the outcome is unknown: retry with the same id
      this.showProblem(err);
    } finally {
      this.dom.review.disabled = false;
    }
  }

  showProblem(err) {
    if (isQuiet(err)) return;
    const box = this.dom.result;
    this.result = null;
    box.hidden = false;
    box.className = "command-result command-result-problem";
    const retry = this.retry;
    let retryButton = null;
    if (retry) {
      retryButton = el("button", { class: "btn btn-secondary", type: "button", "data-testid": "command-retry", text: "Retry (same command id)" });
      retryButton.addEventListener("click", () => this.send(retry));
    }
    fill(box,
      el("h3", { text: "Not sent" }),
      problemMessage(err, { testid: "command-problem" }),
      retry
        ? el("p", { class: "muted", text: "The server may or may not have received the command. A retry carries the same id: the gate returns the first result and never writes twice." })
        : null,
      retryButton,
    );
  }

  showResult(cmd) {
    this.result = cmd;
    const tag = this.tags.get(cmd.tag);
    const box = this.dom.result;
    box.hidden = false;
    const kind = (STATES[cmd.state] || { kind: "off" }).kind;
    box.className = `command-result command-result-${kind}`;
    box.setAttribute("data-state", cmd.state);
    fill(box,
      el("div", { class: "result-head" },
        el("h3", { text: "Last command" }),
        el("span", { "data-testid": "result-state" }, stateBadge(cmd.state))),
      el("p", { class: "result-help", text: STATE_HELP[cmd.state] || "" }),
      factList([
        ["Tag", tagCell(cmd.tag)],
        ["Value sent", fmtValue(cmd.value, tag), "result-value"],
        ["Read back", fmtValue(cmd.read_back, tag), "result-readback"],
        cmd.detail ? ["Detail", cmd.detail, "result-detail"] : null,
        cmd.approved_by ? [cmd.state === "rejected" ? "Rejected by" : "Approved by", cmd.approved_by, "result-approver"] : null,
        cmd.comment ? ["Comment", cmd.comment] : null,
        cmd.state === "awaiting_approval" && cmd.expires_at ? ["Expires", when(cmd.expires_at)] : null,
        ["Id", el("a", { href: `#/commands/${encodeURIComponent(cmd.id)}`, text: cmd.id, "data-testid": "result-link" })],
      ], "facts facts-compact facts-2col"),
    );
  }

  // ------------------------------------------------------------------ history

  buildHistory(mayCommand) {
    this.dom.filter = el("select", { class: "state-filter", "data-testid": "history-state", "aria-label": "Filter by state" },
      el("option", { value: "", text: "All states" }),
      Object.entries(STATES).map(([value, s]) => el("option", { value, text: s.label })));
    if (STATES[this.ctx.query.state]) this.dom.filter.value = this.ctx.query.state;
    this.dom.filter.addEventListener("change", () => this.loadHistory().catch(reportError));
    this.dom.updated = el("span", { class: "crumb", "data-testid": "history-updated", text: "" });
    this.dom.historyProblem = el("div");
    this.history = dataTable({
      testid: "command-history",
      key: (c) => c.id,
      empty: "No command yet.",
      onRowClick: (c) => navigate(`/commands/${encodeURIComponent(c.id)}`),
      columns: [
        { label: "Requested", value: (c) => whenShort(c.created_at), class: "nowrap" },
        { label: "Tag", value: (c) => tagCell(c.tag) },
        { label: "Value", value: (c) => fmtValue(c.value, this.tags.get(c.tag)), class: "num" },
        { label: "State", value: (c) => stateBadge(c.state) },
        { label: "Read back", value: (c) => fmtValue(c.read_back, this.tags.get(c.tag)), class: "num" },
        { label: "By", value: (c) => c.requested_by },
        { label: "Approver", value: (c) => c.approved_by },
        { label: "Reason", value: (c) => el("span", { class: "reason", title: c.reason, text: c.reason }) },
      ],
    });
    return el("section", { class: "panel history-panel", "aria-label": "Command history" },
      el("div", { class: "panel-head" },
        el("div", { class: "panel-title" }, el("h2", { text: "Command history" }), this.dom.updated),
        this.dom.filter),
      mayCommand ? null : el("p", { class: "notice notice-inline", text: "Your role reads the command history; it sends no commands." }),
      this.dom.historyProblem,
      this.history.element);
  }

  async loadHistory() {
    if (this.loading) return;
    this.loading = true;
    try {
      const state = this.dom.filter.value;
      const qs = new URLSearchParams({ limit: "100" });
      if (state) qs.append("state", state);
      const body = await this.api.get(`/api/commands?${qs}`, { signal: this.ctx.signal });
      if (state !== this.dom.filter.value) return; // changed meanwhile: the next load shows it
      this.history.update(body.commands);
      this.dom.historyProblem.replaceChildren();
      this.dom.updated.textContent = `auto-refresh every ${REFRESH_MS / 1000} s · updated ${formatClock(Date.now())}`;
    } catch (err) {
      if (!isQuiet(err)) this.dom.historyProblem.replaceChildren(problemMessage(err, { testid: "history-problem" }));
    } finally {
      this.loading = false;
    }
  }

  async followResult() {
    const cmd = this.result;
    if (!cmd || FINAL.has(cmd.state)) return;
    try {
      const now = await this.api.get(`/api/commands/${encodeURIComponent(cmd.id)}`, { signal: this.ctx.signal });
      if (this.result && this.result.id === now.id && (now.state !== cmd.state || now.read_back !== cmd.read_back)) this.showResult(now);
    } catch (err) {
      reportError(err);
    }
  }

  tick() {
    if (document.hidden) return;
    this.loadHistory().catch(reportError);
    this.followResult();
  }
}
