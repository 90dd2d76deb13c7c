// The approvals inbox (#/approvals, supervisors and admins): commands to critical tags
// awaiting a second person. Each card shows the tag, its current and requested value, the
// limits, who asked and why; another user approves (the command is then written and read
// back) or rejects it with a comment. One's own commands wait for another approver.
// Data: GET /api/commands?state=awaiting_approval (every 2 s), GET /api/tags, the live
// stream, POST /api/commands/{id}/approve | reject.

import { isQuiet, reportError } from "../api.js";
import { el } from "../dom.js";
import { formatClock } from "../format.js";
import { definePage } from "../router.js";
import { confirmDialog } from "../components/dialog.js";
import { problemMessage, problemText } from "../components/problem.js";
import { dataTable } from "../components/table.js";
import { toast } from "../components/toast.js";
import {
  APPROVER_ROLES,
  criticalityBadge,
  currentValueNode,
  factList,
  fetchLast,
  fmtNumber,
  fmtValue,
  limitRows,
  stateBadge,
  tagCell,
  when,
  whenShort,
} from "./commands-ui.js";

const REFRESH_MS = 2000;

export default definePage({
  path: "/approvals",
  label: "Approvals",
  roles: [...APPROVER_ROLES],
  styles: ["/static/css/pages/commands.css"],
  render: (container, ctx) => new Inbox(container, ctx).mount(),
});

function fmtRemaining(ms) {
  if (ms <= 0) return "expired";
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s} s left`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${String(s % 60).padStart(2, "0")} s left` : `${Math.floor(m / 60)} h ${m % 60} min left`;
}

class Inbox {
  constructor(container, ctx) {
    this.container = container;
    this.ctx = ctx;
    this.api = ctx.api;
    this.tags = new Map();
    this.cards = new Map(); // command id -> {cmd, element, current, remaining, busy}
    this.last = new Map(); // tag path -> {value, quality, ts}
    this.decided = [];
    this.loading = false;
    this.dom = {};
  }

  async mount() {
    const { ctx } = this;
    const tags = await this.api.get("/api/tags", { signal: ctx.signal });
    for (const t of tags) this.tags.set(t.path, t);

    this.dom.count = el("span", { class: "count-badge", "data-testid": "approvals-count", text: "0" });
    this.dom.updated = el("span", { class: "crumb", "data-testid": "approvals-updated" });
    this.dom.list = el("div", { class: "approval-list", "data-testid": "approval-list" });
    this.dom.empty = el("p", { class: "empty", "data-testid": "approvals-empty", text: "No command is waiting for approval." });
    this.dom.problem = el("div");
    this.decidedTable = dataTable({
      testid: "approval-decided",
      key: (c) => c.id,
      empty: "Nothing decided yet in this visit.",
      onRowClick: (c) => ctx.navigate(`/commands/${encodeURIComponent(c.id)}`),
      columns: [
        { label: "Decided", value: (c) => whenShort(c.updated_at), class: "nowrap" },
        { label: "Tag", value: (c) => tagCell(c.tag) },
        { label: "Value", value: (c) => fmtValue(c.value, this.tags.get(c.tag)), class: "num" },
        { label: "State", value: (c) => stateBadge(c.state) },
        { label: "Read back", value: (c) => fmtValue(c.read_back, this.tags.get(c.tag)), class: "num" },
        { label: "Requested by", value: (c) => c.requested_by },
        { label: "Detail", value: (c) => c.detail },
      ],
    });
    this.container.append(el("div", { class: "page-body" },
      el("section", { class: "panel inbox-panel", "aria-label": "Commands awaiting approval" },
        el("div", { class: "panel-head" },
          el("div", { class: "panel-title" }, el("h2", { text: "Awaiting approval" }), this.dom.count, this.dom.updated)),
        el("div", { class: "panel-body" },
          el("p", { class: "muted inbox-intro", text: "Commands to critical tags wait here for a second person. Approving writes the value to the machine at once and reads it back; nobody approves their own command." }),
          this.dom.problem, this.dom.list, this.dom.empty)),
      el("section", { class: "panel decided-panel", "aria-label": "Decided in this visit" },
        el("div", { class: "panel-head" }, el("div", { class: "panel-title" }, el("h2", { text: "Decided by you" }),
          el("span", { class: "crumb", text: "this visit; the command history keeps every decision" }))),
        this.decidedTable.element)));

    const off = [
      ctx.stream.on("samples", (samples) => this.onSamples(samples)),
      ctx.stream.on("open", () => this.refreshLast()),
    ];
    await this.load();
    const timer = setInterval(() => !document.hidden && this.load(), REFRESH_MS);
    const clock = setInterval(() => this.paintClocks(), 1000);
    return () => {
      clearInterval(timer);
      clearInterval(clock);
      for (const fn of off) fn();
      ctx.stream.subscribe([]);
    };
  }

  async load() {
    if (this.loading) return;
    this.loading = true;
    try {
      const body = await this.api.get("/api/commands?state=awaiting_approval&limit=200", { signal: this.ctx.signal });
      this.dom.problem.replaceChildren();
      this.sync(body.commands);
      this.dom.updated.textContent = `auto-refresh every ${REFRESH_MS / 1000} s · updated ${formatClock(Date.now())}`;
    } catch (err) {
      if (!isQuiet(err)) this.dom.problem.replaceChildren(problemMessage(err, { testid: "approvals-problem" }));
    } finally {
      this.loading = false;
    }
  }

  /** Add cards for new commands, drop those decided elsewhere; keep typed comments. */
  sync(commands) {
    const ids = new Set(commands.map((c) => c.id));
    for (const [id, card] of this.cards) {
      if (!ids.has(id) && !card.busy) {
        card.element.remove();
        this.cards.delete(id);
      }
    }
    const fresh = [];
    // Oldest first: the one that expires soonest is on top.
    for (const cmd of [...commands].sort((a, b) => a.created_at.localeCompare(b.created_at))) {
      const card = this.cards.get(cmd.id);
      if (card) {
        card.cmd = cmd; // left in place: moving it would take the focus from a comment
        continue;
      }
      const built = this.buildCard(cmd);
      this.cards.set(cmd.id, built);
      this.dom.list.append(built.element);
      fresh.push(cmd.tag); // fresh: the stream only brings what changes from now on
    }
    const n = this.cards.size;
    this.dom.count.textContent = String(n);
    this.dom.count.classList.toggle("count-zero", n === 0);
    this.dom.empty.hidden = n > 0;
    const paths = [...new Set([...this.cards.values()].map((c) => c.cmd.tag))];
    this.ctx.stream.subscribe(paths);
    for (const path of new Set(fresh)) this.fetchOne(path);
    this.paintClocks();
  }

  buildCard(cmd) {
    const tag = this.tags.get(cmd.tag) || { path: cmd.tag, unit: "", criticality: "critical", range: null };
    const own = cmd.requested_by === this.ctx.me.username;
    const current = el("span");
    const remaining = el("span", { class: "remaining", "data-testid": "approval-expires" });
    const cardProblem = el("div");
    const element = el("article", { class: "approval-card", "data-testid": "approval-card", "data-id": cmd.id, "data-tag": cmd.tag });
    const card = { cmd, element, current, remaining, busy: false, tag };

    let actions;
    if (own) {
      actions = el("p", { class: "notice notice-own", "data-testid": "approval-own" },
        "Waiting for another approver: you cannot approve or reject your own command.");
    } else {
      const comment = el("textarea", { rows: 2, maxLength: 1000, placeholder: "Comment (recorded; required to reject)", "data-testid": "approval-comment", "aria-label": "Comment" });
      const commentError = el("p", { class: "field-error", role: "alert" });
      const reject = el("button", { class: "btn btn-secondary btn-reject", type: "button", "data-testid": "approval-reject", text: "Reject" });
      const approve = el("button", { class: "btn btn-primary", type: "button", "data-testid": "approval-approve", text: "Approve and write" });
      comment.addEventListener("input", () => (commentError.textContent = ""));
      reject.addEventListener("click", () => {
        if (!comment.value.trim()) {
          commentError.textContent = "Say why you reject it: the requester sees your comment.";
          comment.focus();
          return;
        }
        this.decide(card, "reject", comment.value.trim(), [approve, reject], cardProblem);
      });
      approve.addEventListener("click", async () => {
        const ok = await confirmDialog({
          title: "Approve and write this value now?",
          body: [
            el("p", {}, "The gate writes ", el("strong", { text: fmtValue(cmd.value, tag) }), " to ", el("code", { text: cmd.tag }),
              ` at once (requested by ${cmd.requested_by}), then reads it back.`),
            factList([["Current value", currentValueNode(this.last.get(cmd.tag), tag)], ...limitRows(tag)], "facts facts-compact"),
          ],
          confirmLabel: "Approve and write",
          testid: "approve-confirm",
        });
        if (ok) this.decide(card, "approve", comment.value.trim(), [approve, reject], cardProblem);
      });
      actions = el("div", { class: "approval-actions" },
        el("div", { class: "approval-comment" }, comment, commentError),
        el("div", { class: "approval-buttons" }, reject, approve));
    }

    const delta = el("span", { class: "confirm-delta" });
    card.delta = delta;
    element.append(
      el("header", { class: "approval-head" },
        tagCell(cmd.tag),
        el("div", { class: "approval-badges" }, criticalityBadge(tag.criticality), stateBadge(cmd.state), remaining)),
      el("div", { class: "confirm-change" },
        el("div", { class: "confirm-box" },
          el("span", { class: "confirm-label", text: "Current" }),
          el("span", { class: "confirm-value", "data-testid": "approval-current" }, current)),
        el("span", { class: "confirm-arrow", "aria-hidden": "true", text: "→" }),
        el("div", { class: "confirm-box confirm-box-new" },
          el("span", { class: "confirm-label", text: "Requested" }),
          el("span", { class: "confirm-value", "data-testid": "approval-value", text: fmtValue(cmd.value, tag) }),
          delta)),
      factList([
        ["Requested by", `${cmd.requested_by} (${cmd.requested_role})`, "approval-requester"],
        ["Reason", cmd.reason, "approval-reason"],
        ["Requested", when(cmd.created_at)],
        ...limitRows(tag),
      ], "facts facts-compact"),
      cardProblem,
      actions,
    );
    return card;
  }

  async decide(card, action, comment, buttons, problemBox) {
    card.busy = true;
    for (const b of buttons) b.disabled = true;
    problemBox.replaceChildren();
    try {
      const cmd = await this.api.post(`/api/commands/${encodeURIComponent(card.cmd.id)}/${action}`, { comment }, { signal: this.ctx.signal });
      this.decided.unshift(cmd);
      this.decidedTable.update(this.decided);
      card.element.remove();
      this.cards.delete(card.cmd.id);
      const what = action === "approve" ? `Approved: ${cmd.state}${cmd.read_back !== null && cmd.read_back !== undefined ? `, read back ${fmtValue(cmd.read_back, card.tag)}` : ""}` : "Rejected: nothing was written";
      toast(what, { kind: action === "approve" && cmd.state !== "verified" ? "error" : "success" });
    } catch (err) {
      if (isQuiet(err)) return;
      problemBox.replaceChildren(problemMessage(err, { testid: "approval-problem" }));
      // Decided elsewhere or expired: the card goes at the next refresh, the notice stays.
      if (err.status === 409 || err.status === 404) toast(problemText(err), { kind: "error", timeout: 8000 });
      for (const b of buttons) b.disabled = false;
    } finally {
      card.busy = false;
      this.load().catch(reportError);
    }
  }

  paintClocks() {
    const now = Date.now();
    for (const card of this.cards.values()) {
      const expires = card.cmd.expires_at ? Date.parse(card.cmd.expires_at) : null;
      card.remaining.textContent = expires ? fmtRemaining(expires - now) : "";
      card.remaining.classList.toggle("remaining-soon", expires !== null && expires - now < 60_000);
      const last = this.last.get(card.cmd.tag);
      card.current.replaceChildren(currentValueNode(last, card.tag));
      if (last && typeof last.value === "number" && typeof card.cmd.value === "number") {
        const d = card.cmd.value - last.value;
        card.delta.textContent = `${d >= 0 ? "+" : "−"}${fmtNumber(Math.abs(Math.round(d * 1e6) / 1e6))}${card.tag.unit ? ` ${card.tag.unit}` : ""}`;
      }
    }
  }

  async fetchOne(path) {
    try {
      const last = await fetchLast(this.api, path, this.ctx.signal);
      const known = this.last.get(path);
      if (last && (!known || last.ts >= known.ts)) this.last.set(path, last);
      this.paintClocks();
    } catch (err) {
      reportError(err);
    }
  }

  refreshLast() {
    for (const path of new Set([...this.cards.values()].map((c) => c.cmd.tag))) this.fetchOne(path);
  }

  onSamples(samples) {
    let changed = false;
    for (const s of samples) {
      if (![...this.cards.values()].some((c) => c.cmd.tag === s.path)) continue;
      const ts = Date.parse(s.timestamp);
      const known = this.last.get(s.path);
      if (!known || ts >= known.ts) {
        this.last.set(s.path, { value: s.value, quality: s.quality, ts });
        changed = true;
      }
    }
    if (changed) this.paintClocks();
  }
}
