// My account (#/account, every role): who I am (role, scopes, session) and two-step
// verification: enrol (POST /api/auth/mfa/enroll → a QR code and the secret), verify a
// code (POST /api/auth/mfa/verify → ten recovery codes, shown once) and confirm they are
// saved. A user whose role requires MFA lands here after signing in and cannot go on
// before enrolling.

import { isQuiet } from "../api.js";
import { el } from "../dom.js";
import { definePage, ROLES } from "../router.js";
import { field } from "../components/field.js";
import { problemMessage } from "../components/problem.js";
import { toast } from "../components/toast.js";
import { mfaEnrolmentDone, mfaEnrolmentPending } from "../login.js";
import { ROLE_HELP, copyButton, fill, postAnswer, scopesText } from "./account-ui.js";

export default definePage({
  path: "/account",
  label: "My account",
  roles: [...ROLES],
  styles: ["/static/css/pages/account.css"],
  render: (container, ctx) => new Account(container, ctx).mount(),
});

/** Whether MFA is active, from the fields GET /api/auth/me may carry. */
function mfaActive(me) {
  if (typeof me.mfa_active === "boolean") return me.mfa_active;
  if (me.mfa && typeof me.mfa === "object") return Boolean(me.mfa.active);
  return me.mfa === true;
}

class Account {
  constructor(container, ctx) {
    this.container = container;
    this.ctx = ctx;
    this.api = ctx.api;
    this.me = ctx.me;
    this.dom = {};
  }

  async mount() {
    const { ctx } = this;
    try {
      this.me = await this.api.get("/api/auth/me", { signal: ctx.signal });
    } catch (err) {
      if (isQuiet(err)) throw err;
      // keep the shell's copy: the page still shows what it knows
    }
    const pending = mfaEnrolmentPending() || this.me.mfa_enrollment_required === true;
    this.dom.mfa = el("div", { class: "panel-body mfa-body", "data-testid": "mfa-panel" });
    this.container.append(el("div", { class: "page-body account-body" },
      pending
        ? el("div", { class: "enrol-banner", role: "alert", "data-testid": "mfa-required-banner" },
            el("strong", { text: "Two-step verification is required for your role." }),
            el("span", { text: " Set it up below to continue: until then this session can do nothing else." }))
        : null,
      this.profilePanel(),
      el("section", { class: "panel", "aria-label": "Two-step verification" },
        el("div", { class: "panel-head" }, el("div", { class: "panel-title" }, el("h2", { text: "Two-step verification" }))),
        this.dom.mfa),
      this.me.kind === "token" || pending ? null : this.passwordPanel()));
    this.paintMfaState();
    return undefined;
  }

  profilePanel() {
    const me = this.me;
    const mfa = mfaActive(me);
    const rows = [
      ["Username", me.username, "account-username"],
      ["Role", el("span", {}, el("span", { class: `role-badge role-${me.role}`, text: me.role }), el("span", { class: "muted role-help", text: ROLE_HELP[me.role] || "" })), "account-role"],
      ["Scopes", scopesText(me.scopes), "account-scopes"],
      ["Two-step verification", el("span", { class: `mfa-state ${mfa ? "mfa-on" : "mfa-off"}`, text: mfa ? "active" : "not set up" }), "account-mfa-state"],
      typeof me.recovery_codes_left === "number" && mfa ? ["Recovery codes left", String(me.recovery_codes_left), "account-recovery-left"] : null,
    ];
    return el("section", { class: "panel", "aria-label": "Account" },
      el("div", { class: "panel-head" }, el("div", { class: "panel-title" }, el("h2", { text: "My account" }))),
      el("div", { class: "panel-body" },
        el("dl", { class: "account-facts", "data-testid": "account-facts" },
          rows.filter(Boolean).map(([dt, dd, testid]) => [el("dt", { text: dt }), el("dd", { "data-testid": testid }, dd)]))));
  }

  passwordPanel() {
    const f = {
      current: field({ label: "Current password", name: "current", type: "password", autocomplete: "current-password", maxLength: 1024, testid: "password-current" }),
      next: field({ label: "New password", name: "new", type: "password", autocomplete: "new-password", maxLength: 1024, testid: "password-new",
        hint: "12+ characters, not your username, not a common password." }),
      again: field({ label: "New password again", name: "again", type: "password", autocomplete: "new-password", maxLength: 1024, testid: "password-again" }),
    };
    const problem = el("div");
    const submit = el("button", { class: "btn btn-primary", type: "submit", "data-testid": "password-change", text: "Change password" });
    const form = el("form", { class: "panel-body", noValidate: true },
      // For password managers: whose password this is.
      el("input", { type: "text", name: "username", autocomplete: "username", value: this.me.username, hidden: true, readOnly: true }),
      el("div", { class: "form-grid form-grid-3" }, f.current.element, f.next.element, f.again.element),
      problem,
      el("div", { class: "form-actions" }, submit));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      f.current.setError(f.current.value ? "" : "Enter your current password.");
      f.next.setError(f.next.value.length >= 12 ? "" : "At least 12 characters.");
      f.again.setError(f.again.value === f.next.value ? "" : "The two new passwords differ.");
      if (!f.current.value || f.next.value.length < 12 || f.again.value !== f.next.value) return;
      submit.disabled = true;
      try {
        await postAnswer("/api/auth/password", { current_password: f.current.value, new_password: f.next.value }, this.ctx.signal);
        for (const x of Object.values(f)) x.value = "";
        toast("Password changed. Your other sessions have ended.", { kind: "success" });
      } catch (err) {
        if (!isQuiet(err)) problem.replaceChildren(problemMessage(err, { testid: "password-problem" }));
      } finally {
        submit.disabled = false;
      }
    });
    return el("section", { class: "panel", "aria-label": "Password" },
      el("div", { class: "panel-head" }, el("div", { class: "panel-title" }, el("h2", { text: "Password" }))),
      form);
  }

  paintMfaState() {
    const active = mfaActive(this.me);
    if (active) {
      fill(this.dom.mfa,
        el("p", { class: "mfa-line", "data-testid": "mfa-active" },
          el("span", { class: "mfa-state mfa-on", text: "active" }),
          " Signing in asks for a code from your authenticator app (or a recovery code)."),
        el("p", { class: "muted", text: "Lost your phone or your recovery codes? An administrator can reset your second factor; you then set it up again here." }));
      return;
    }
    const start = el("button", { class: "btn btn-primary", type: "button", "data-testid": "mfa-start", text: "Set up two-step verification" });
    const problem = el("div");
    start.addEventListener("click", () => this.enrol(start, problem));
    fill(this.dom.mfa,
      el("p", { class: "mfa-line" },
        el("span", { class: "mfa-state mfa-off", text: "not set up" }),
        " A second factor protects your account if your password leaks: after your password, signing in asks for a 6-digit code from an authenticator app (FreeOTP, Aegis, Google or Microsoft Authenticator...)."),
      problem,
      el("div", { class: "form-actions" }, start));
  }

  async enrol(button, problemBox) {
    button.disabled = true;
    problemBox.replaceChildren();
    let enrolment;
    try {
      enrolment = await this.api.post("/api/auth/mfa/enroll", {}, { signal: this.ctx.signal });
    } catch (err) {
      if (!isQuiet(err)) problemBox.replaceChildren(problemMessage(err, { testid: "mfa-problem" }));
      button.disabled = false;
      return;
    }
    this.showEnrolment(enrolment);
  }

  showEnrolment(e) {
    const src = e.qr_data_uri || (e.qr_svg ? `data:image/svg+xml;charset=utf-8,${encodeURIComponent(e.qr_svg)}` : null);
    const uri = e.otpauth_uri || e.uri || "";
    const secret = e.secret || (uri.match(/[?&]secret=([A-Z2-7]+)/i) || [])[1] || "";
    const code = el("input", {
      id: "mfa-code", class: "code-input", inputMode: "numeric", autocomplete: "one-time-code", maxLength: 10,
      placeholder: "123456", "data-testid": "mfa-code",
    });
    const error = el("div");
    const verify = el("button", { class: "btn btn-primary", type: "submit", "data-testid": "mfa-verify", text: "Verify and turn on" });
    const form = el("form", { class: "mfa-verify" },
      el("label", { for: "mfa-code", text: "3. Enter the code the app shows" }),
      el("div", { class: "code-row" }, code, verify),
      error);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const otp = code.value.replace(/\s+/g, "");
      if (!/^\d{6,8}$/.test(otp)) {
        error.replaceChildren(el("p", { class: "field-error", text: "Enter the 6 digits the app shows." }));
        return;
      }
      verify.disabled = true;
      error.replaceChildren();
      try {
        const answer = await postAnswer("/api/auth/mfa/verify", { otp }, this.ctx.signal);
        this.showRecoveryCodes(Array.isArray(answer) ? answer : answer.recovery_codes || []);
      } catch (err) {
        if (isQuiet(err)) return;
        error.replaceChildren(problemMessage(err, { testid: "mfa-problem" }));
        code.select();
        verify.disabled = false;
      }
    });
    fill(this.dom.mfa,
      el("div", { class: "enrol-grid" },
        el("div", { class: "qr-box" },
          el("p", { class: "step", text: "1. Scan this QR code with your authenticator app" }),
          src ? el("img", { class: "qr", src, alt: "QR code of the TOTP secret", width: 220, height: 220, "data-testid": "mfa-qr" }) : null),
        el("div", { class: "secret-box" },
          el("p", { class: "step", text: "2. …or type the secret into it" }),
          el("div", { class: "secret-row" },
            el("code", { class: "secret", "data-testid": "mfa-secret", text: secret.replace(/(.{4})/g, "$1 ").trim() }),
            copyButton(() => secret, "Copy secret", "mfa-copy-secret")),
          el("p", { class: "muted small", text: "Time-based (TOTP), 6 digits, 30 seconds, SHA-1: the defaults of every app." }),
          el("details", { class: "uri" },
            el("summary", { text: "Show the otpauth URI" }),
            el("div", { class: "secret-row" },
              el("code", { class: "uri-text", "data-testid": "mfa-uri", text: uri }),
              copyButton(() => uri, "Copy URI", "mfa-copy-uri"))),
          form)));
    code.focus();
  }

  showRecoveryCodes(codes) {
    const text = codes.join("\n");
    const saved = el("input", { id: "mfa-saved", type: "checkbox", "data-testid": "mfa-saved" });
    const done = el("button", { class: "btn btn-primary", type: "button", "data-testid": "mfa-done", text: "Done", disabled: true });
    saved.addEventListener("change", () => (done.disabled = !saved.checked));
    const download = el("button", { class: "btn btn-secondary", type: "button", "data-testid": "mfa-download", text: "Download .txt" });
    download.addEventListener("click", () => {
      const url = URL.createObjectURL(new Blob([`Isthmus recovery codes for ${this.me.username}\n\n${text}\n`], { type: "text/plain" }));
      const a = el("a", { href: url, download: `isthmus-recovery-codes-${this.me.username}.txt` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    });
    done.addEventListener("click", () => {
      const wasPending = mfaEnrolmentPending();
      mfaEnrolmentDone();
      this.me = { ...this.me, mfa_active: true, mfa_enrollment_required: false, recovery_codes_left: codes.length };
      toast("Two-step verification is on.", { kind: "success" });
      if (wasPending) {
        location.hash = "#/";
        window.dispatchEvent(new CustomEvent("isthmus:session-changed"));
        return;
      }
      this.container.replaceChildren();
      this.mount();
    });
    fill(this.dom.mfa,
      el("div", { class: "codes-box", "data-testid": "mfa-codes-box" },
        el("p", { class: "codes-title" }, el("strong", { text: "Two-step verification is on." }),
          " Save these recovery codes now: they are shown only this once. Each one signs you in once if you lose your phone."),
        el("ol", { class: "recovery-codes", "data-testid": "mfa-recovery-codes" },
          codes.map((c) => el("li", { "data-testid": "mfa-recovery-code", text: c }))),
        el("div", { class: "codes-actions" }, copyButton(() => text, "Copy all", "mfa-copy-codes"), download),
        el("div", { class: "codes-confirm" },
          el("label", { class: "check", for: "mfa-saved" }, saved, " I saved them somewhere safe"),
          done)));
  }
}
