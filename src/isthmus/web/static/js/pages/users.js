// Users (#/users, admin and security_admin): the list (role, scopes, MFA, disabled,
// locked), add a user (role, scopes, initial password under the policy), and per user:
// set role, set scopes, reset password, reset MFA, disable / enable.
// Data: /api/users (the server checks every change again: e.g. only an admin grants
// the admin role, nobody disables themselves, the last admin stays).

import { el } from "../dom.js";
import { formatTimestamp } from "../format.js";
import { definePage, ROLES } from "../router.js";
import { confirmDialog, openDialog } from "../components/dialog.js";
import { field } from "../components/field.js";
import { dataTable } from "../components/table.js";
import { toast } from "../components/toast.js";
import { ROLE_HELP, apiMs as time, copyButton, panel, parseScopes, roleField, scopesText, showProblemIn } from "./account-ui.js";

export default definePage({
  path: "/users",
  label: "Users",
  roles: ["admin", "security_admin"],
  styles: ["/static/css/pages/account.css"],
  render: (container, ctx) => new UsersPage(container, ctx).mount(),
});

const ROLE_OPTIONS = ROLES.map((r) => [r, r]);
const POLICY = [
  "at least 12 characters",
  "not the username, and not containing it",
  "not a common password (a list of about 40,000 is checked, also with digits and symbols around it)",
];

const userUrl = (name, rest = "") => `/api/users/${encodeURIComponent(name)}${rest}`;
const list = (body) => (Array.isArray(body) ? body : body.users || []);

function lockedUntil(u) {
  const t = time(u.locked_until ?? u.locked_until_ns ?? null);
  return t && t > Date.now() ? t : null;
}

function mfaCell(u) {
  if (u.mfa_active) {
    const left = typeof u.recovery_codes_left === "number" ? ` · ${u.recovery_codes_left} codes` : "";
    return el("span", { class: "mfa-state mfa-on", text: `active${left}` });
  }
  if (u.mfa_pending) return el("span", { class: "mfa-state mfa-pending", text: "enrolling" });
  return el("span", { class: "mfa-state mfa-off", text: "none" });
}

function statusCell(u) {
  const locked = lockedUntil(u);
  return el("span", { class: "status-cell" },
    u.disabled
      ? el("span", { class: "flag flag-off", "data-testid": "user-status", text: "disabled" })
      : el("span", { class: "flag flag-ok", "data-testid": "user-status", text: "enabled" }),
    locked ? el("span", { class: "flag flag-bad", title: `locked until ${formatTimestamp(locked)}`, text: "locked" }) : null);
}

class UsersPage {
  constructor(container, ctx) {
    this.container = container;
    this.ctx = ctx;
    this.api = ctx.api;
    this.users = [];
  }

  async mount() {
    this.problem = el("div", { "data-testid": "users-problem-box" });
    this.count = el("span", { class: "crumb" });
    this.table = dataTable({
      testid: "user-table",
      key: (u) => u.username,
      empty: "No user.",
      columns: [
        { label: "User", value: (u) => el("strong", { text: u.username }) },
        { label: "Role", value: (u) => el("span", { class: `role-badge role-${u.role}`, text: u.role, title: ROLE_HELP[u.role] || "" }) },
        { label: "Scopes", value: (u) => scopesText(u.scopes), class: "scopes" },
        { label: "MFA", value: mfaCell },
        { label: "Status", value: statusCell },
        { label: "Sessions", value: (u) => (typeof u.sessions === "number" ? String(u.sessions) : "—"), class: "num" },
        { label: "", value: (u) => this.actions(u), class: "actions" },
      ],
    });
    const openAdd = el("button", { class: "btn btn-primary", type: "button", "data-testid": "user-add-open", text: "Add user" });
    this.addPanel = this.buildAddForm();
    openAdd.addEventListener("click", () => {
      this.addPanel.hidden = !this.addPanel.hidden;
      if (!this.addPanel.hidden) this.addPanel.querySelector("input").focus();
    });
    this.container.append(el("div", { class: "page-body" },
      this.addPanel,
      panel({ class: "panel list-panel", "aria-label": "Users" },
        { title: "Users", inTitle: this.count, right: openAdd },
        this.problem,
        this.table.element)));
    await this.load();
    return undefined;
  }

  async load() {
    try {
      this.users = list(await this.api.get("/api/users", { signal: this.ctx.signal }));
      this.users.sort((a, b) => a.username.localeCompare(b.username));
      this.table.update(this.users);
      this.count.textContent = `${this.users.length} user${this.users.length === 1 ? "" : "s"}`;
      for (const tr of this.table.element.querySelectorAll("tbody tr")) {
        const u = this.users.find((x) => x.username === tr.getAttribute("data-key"));
        tr.classList.toggle("is-disabled", Boolean(u && u.disabled));
      }
    } catch (err) {
      this.showProblem(err);
    }
  }

  showProblem(err) {
    showProblemIn(this.problem, err, "users-problem");
  }

  clearProblem() {
    this.problem.replaceChildren();
  }

  buildAddForm() {
    const f = {
      username: field({ label: "Username", name: "username", required: true, maxLength: 64, autocomplete: "off", testid: "user-add-username" }),
      role: roleField(ROLE_OPTIONS, "user-add-role"),
      scopes: field({ label: "Scopes", name: "scopes", type: "textarea", rows: 1, placeholder: "acme/lyon/utilities", hint: "Hierarchy prefixes, one per line; empty = the whole enterprise.", testid: "user-add-scopes" }),
      password: field({ label: "Initial password", name: "password", type: "password", required: true, autocomplete: "new-password", maxLength: 1024, testid: "user-add-password" }),
    };
    const problem = el("div");
    const submit = el("button", { class: "btn btn-primary", type: "submit", "data-testid": "user-add-submit", text: "Add user" });
    const cancel = el("button", { class: "btn btn-secondary", type: "button", text: "Cancel" });
    const form = el("form", { class: "panel-body", noValidate: true },
      el("div", { class: "form-grid" }, f.username.element, f.role.element, f.scopes.element, f.password.element),
      el("div", { class: "policy", "data-testid": "password-policy" },
        el("strong", { text: "Password policy: " }), "the server refuses a password that is not",
        el("ul", {}, POLICY.map((p) => el("li", { text: p })))),
      el("p", { class: "muted small", text: "Give the password to the user over a separate channel. If their role requires two-step verification, they set it up at their first sign-in." }),
      problem,
      el("div", { class: "form-actions" }, cancel, submit));
    const addPanel = panel({ class: "panel", hidden: true, "aria-label": "Add a user", "data-testid": "user-add-form" },
      { title: "Add a user" }, form);
    cancel.addEventListener("click", () => (addPanel.hidden = true));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      const username = f.username.value.trim();
      f.username.setError(username ? "" : "Enter a username.");
      const password = f.password.value;
      f.password.setError(password.length >= 12 ? "" : "At least 12 characters.");
      if (!username || password.length < 12) return;
      submit.disabled = true;
      try {
        await this.api.post("/api/users", { username, role: f.role.value, scopes: parseScopes(f.scopes.value), password }, { signal: this.ctx.signal });
        toast(`User ${username} added.`, { kind: "success" });
        f.username.value = "";
        f.password.value = "";
        f.scopes.value = "";
        addPanel.hidden = true;
        await this.load();
      } catch (err) {
        showProblemIn(problem, err, "user-add-problem", false);
      } finally {
        submit.disabled = false;
      }
    });
    return addPanel;
  }

  actions(u) {
    const me = this.ctx.me.username === u.username;
    const button = (label, testid, fn, kind = "secondary") => {
      const b = el("button", { class: `btn btn-${kind}`, type: "button", text: label, "data-testid": testid });
      b.addEventListener("click", (event) => {
        event.stopPropagation();
        this.clearProblem();
        fn().catch((err) => this.showProblem(err));
      });
      return b;
    };
    return el("div", { class: "row-actions" },
      button("Role", "user-set-role", () => this.setRole(u)),
      button("Scopes", "user-set-scopes", () => this.setScopes(u)),
      button("Password", "user-reset-password", () => this.resetPassword(u)),
      u.mfa_active || u.mfa_pending ? button("Reset MFA", "user-reset-mfa", () => this.resetMfa(u)) : null,
      me ? null : u.disabled
        ? button("Enable", "user-enable", () => this.setDisabled(u, false))
        : button("Disable", "user-disable", () => this.setDisabled(u, true), "secondary btn-reject"));
  }

  async patch(u, body, message) {
    await this.api.patch(userUrl(u.username), body, { signal: this.ctx.signal });
    toast(message, { kind: "success" });
    await this.load();
  }

  async setRole(u) {
    const role = field({ label: "Role", name: "role", type: "select", options: ROLE_OPTIONS, value: u.role, testid: "dialog-role" });
    const help = el("p", { class: "field-hint", text: ROLE_HELP[u.role] || "" });
    role.input.addEventListener("change", () => (help.textContent = ROLE_HELP[role.value] || ""));
    const ok = await confirmDialog({
      title: `Role of ${u.username}`,
      body: [role.element, help, el("p", { class: "muted small", text: "Applies to the user's next request." })],
      confirmLabel: "Set role",
      testid: "user-role-dialog",
    });
    if (ok && role.value !== u.role) await this.patch(u, { role: role.value }, `${u.username} is now ${role.value}.`);
  }

  async setScopes(u) {
    const scopes = field({
      label: "Scopes", name: "scopes", type: "textarea", rows: 4, value: (u.scopes || []).join("\n"),
      hint: "Hierarchy prefixes, one per line (e.g. acme/lyon/utilities); empty = the whole enterprise.", testid: "dialog-scopes",
    });
    const ok = await confirmDialog({ title: `Scopes of ${u.username}`, body: [scopes.element], confirmLabel: "Set scopes", testid: "user-scopes-dialog" });
    if (ok) await this.patch(u, { scopes: parseScopes(scopes.value) }, `Scopes of ${u.username} set.`);
  }

  async resetPassword(u) {
    const password = field({
      label: "New password", name: "password", type: "password", autocomplete: "new-password", maxLength: 1024,
      hint: "Empty: the server generates one (shown once). The policy applies: 12+ characters, not the username, not a common password.",
      testid: "dialog-password",
    });
    const ok = await confirmDialog({
      title: `Reset the password of ${u.username}`,
      body: [password.element, el("p", { class: "muted small", text: "Their sessions end and a lockout is lifted." })],
      confirmLabel: "Reset password",
      danger: true,
      testid: "user-password-dialog",
    });
    if (!ok) return;
    const body = password.value ? { password: password.value } : { password: null };
    const answer = await this.api.post(userUrl(u.username, "/reset-password"), body, { signal: this.ctx.signal });
    const generated = answer && answer.password;
    if (generated) {
      await openDialog({
        title: `New password of ${u.username}`,
        body: [
          el("p", { text: "Give it to the user over a separate channel: it is shown only this once." }),
          el("div", { class: "secret-row" }, el("code", { class: "secret", "data-testid": "generated-password", text: generated }), copyButton(() => generated, "Copy")),
        ],
        actions: [{ label: "Done", value: true, kind: "primary" }],
        testid: "generated-password-dialog",
      });
    } else {
      toast(`Password of ${u.username} reset.`, { kind: "success" });
    }
    await this.load();
  }

  async resetMfa(u) {
    const ok = await confirmDialog({
      title: `Reset two-step verification of ${u.username}?`,
      body: "Their second factor and recovery codes are removed and their sessions end. They set it up again at the next sign-in (if their role requires it) or from their account page.",
      confirmLabel: "Reset MFA",
      danger: true,
      testid: "user-mfa-dialog",
    });
    if (!ok) return;
    await this.api.post(userUrl(u.username, "/reset-mfa"), undefined, { signal: this.ctx.signal });
    toast(`MFA of ${u.username} reset.`, { kind: "success" });
    await this.load();
  }

  async setDisabled(u, disabled) {
    if (disabled) {
      const ok = await confirmDialog({
        title: `Disable ${u.username}?`,
        body: "Their sessions end at once and they cannot sign in until enabled again. Their API tokens are not affected (revoke those on the API tokens page).",
        confirmLabel: "Disable",
        danger: true,
        testid: "user-disable-dialog",
      });
      if (!ok) return;
    }
    await this.patch(u, { disabled }, `${u.username} ${disabled ? "disabled" : "enabled"}.`);
  }
}
