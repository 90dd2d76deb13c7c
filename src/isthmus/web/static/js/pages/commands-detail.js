// One command (#/commands/:id): every field of GET /api/commands/{id}, followed every 2 s
// until the command is final. Reached from the history and the approvals inbox.

import { reportError } from "../api.js";
import { el } from "../dom.js";
import { definePage } from "../router.js";
import { problemMessage } from "../components/problem.js";
import { FINAL, STATE_HELP, factList, fmtValue, stateBadge, when } from "./commands-ui.js";

const REFRESH_MS = 2000;

export default definePage({
  path: "/commands/:id",
  label: "Command",
  nav: false,
  roles: ["operator", "engineer", "supervisor", "security_admin", "admin"],
  styles: ["/static/css/pages/commands.css"],
  async render(container, ctx) {
    const body = el("div", { class: "page-body" });
    container.append(body);
    const url = `/api/commands/${encodeURIComponent(ctx.params.id)}`;
    let tag = null;
    const panel = el("section", { class: "panel detail-panel", "data-testid": "command-detail" });
    body.append(el("a", { href: "#/commands", class: "back-link", text: "← Commands" }), panel);

    const paint = (cmd) => {
      panel.setAttribute("data-state", cmd.state);
      panel.replaceChildren(
        el("div", { class: "panel-head" },
          el("div", { class: "panel-title" }, el("h2", { text: "Command" }), el("span", { class: "crumb", text: cmd.id })),
          el("span", { "data-testid": "detail-state" }, stateBadge(cmd.state))),
        el("div", { class: "panel-body" },
          el("p", { class: "result-help", text: STATE_HELP[cmd.state] || "" }),
          factList([
            ["Tag", el("code", { text: cmd.tag })],
            ["Value", fmtValue(cmd.value, tag), "detail-value"],
            ["Read back", fmtValue(cmd.read_back, tag), "detail-readback"],
            ["Detail", cmd.detail || "—"],
            ["Requested by", `${cmd.requested_by} (${cmd.requested_role})`],
            ["Reason", cmd.reason],
            ["Approved / rejected by", cmd.approved_by || "—"],
            ["Approver's comment", cmd.comment || "—"],
            ["Conduit check", cmd.conduit || "—"],
            ["Requested", when(cmd.created_at)],
            ["Expires", cmd.state === "awaiting_approval" ? when(cmd.expires_at) : "—"],
            ["Written", when(cmd.written_at)],
            ["Finished", when(cmd.finished_at)],
          ]),
        ),
      );
    };

    let cmd;
    try {
      cmd = await ctx.api.get(url, { signal: ctx.signal });
      const tags = await ctx.api.get(`/api/tags?prefix=${encodeURIComponent(cmd.tag)}`, { signal: ctx.signal });
      tag = tags.find((t) => t.path === cmd.tag) || null;
    } catch (err) {
      if (!cmd) {
        panel.replaceWith(problemMessage(err));
        return undefined;
      }
    }
    paint(cmd);
    const timer = setInterval(async () => {
      if (FINAL.has(cmd.state) || document.hidden) return;
      try {
        cmd = await ctx.api.get(url, { signal: ctx.signal });
        paint(cmd);
      } catch (err) {
        reportError(err);
      }
    }, REFRESH_MS);
    return () => clearInterval(timer);
  },
});
