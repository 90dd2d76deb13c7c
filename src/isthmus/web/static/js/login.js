// The sign-in form of index.html: POST /api/auth/login, keep the token, tell the shell.

import { ApiError, login, setToken } from "./api.js";
import { $ } from "./dom.js";
import { problemText } from "./components/problem.js";

export function showLogin(message = "") {
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-password").value = "";
  $("login-username").focus();
}

export function hideLogin() {
  $("login-view").hidden = true;
}

/** Wire the form; `onSignedIn()` runs with the token stored (and may throw: shown). */
export function initLogin(onSignedIn) {
  const form = $("login-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter || form.querySelector("button");
    button.disabled = true;
    $("login-error").textContent = "";
    try {
      let body;
      try {
        body = await login($("login-username").value, $("login-password").value);
      } catch (err) {
        $("login-error").textContent =
          err instanceof ApiError && err.status === 401
            ? "Wrong username or password."
            : err instanceof ApiError && err.status !== 0
              ? problemText(err, "Sign-in failed.")
              : "The server cannot be reached.";
        return;
      }
      setToken(body.access_token);
      $("login-password").value = "";
      await onSignedIn();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) $("login-error").textContent = "The server cannot be reached.";
    } finally {
      button.disabled = false;
    }
  });
}
