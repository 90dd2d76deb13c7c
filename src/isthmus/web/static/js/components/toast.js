// Short notices in the corner: `toast("Command sent", {kind: "success"})`.

import { el } from "../dom.js";

function container() {
  let box = document.getElementById("toasts");
  if (!box) {
    box = el("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
    document.body.append(box);
  }
  return box;
}

/** kind: "info" | "success" | "error"; timeout in ms (0 = until clicked). */
export function toast(message, { kind = "info", timeout = 4000 } = {}) {
  const item = el("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": "toast", text: message });
  const close = () => item.remove();
  item.addEventListener("click", close);
  container().append(item);
  if (timeout > 0) setTimeout(close, timeout);
  return close;
}
