// Modal dialogs on the native <dialog> element (Escape cancels).
//   if (await confirmDialog({title: "Send command?", body: [...], confirmLabel: "Send"})) ...

import { el } from "../dom.js";

/** Resolves to the `value` of the button pressed, or null when cancelled. */
export function openDialog({ title, body = [], actions = [], testid = "dialog" }) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { class: "dialog", "data-testid": testid, "aria-label": title });
    let result = null;
    const buttons = actions.map(({ label, value, kind = "secondary", testid: bt }) => {
      const b = el("button", { class: `btn btn-${kind}`, type: "button", text: label, "data-testid": bt });
      b.addEventListener("click", () => {
        result = value;
        dialog.close();
      });
      return b;
    });
    dialog.append(
      el("h2", { class: "dialog-title", text: title }),
      el("div", { class: "dialog-body" }, typeof body === "string" ? el("p", { text: body }) : body),
      el("div", { class: "dialog-actions" }, buttons),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    const primary = buttons[buttons.length - 1];
    if (primary) primary.focus();
  });
}

/** Cancel / Confirm; resolves to true only when confirmed. `danger` paints it red. */
export async function confirmDialog({
  title,
  body = [],
  confirmLabel = "Confirm",
  cancelLabel = "Cancel",
  danger = false,
  testid = "confirm-dialog",
}) {
  const value = await openDialog({
    title,
    body,
    testid,
    actions: [
      { label: cancelLabel, value: false, kind: "secondary", testid: "dialog-cancel" },
      { label: confirmLabel, value: true, kind: danger ? "danger" : "primary", testid: "dialog-confirm" },
    ],
  });
  return value === true;
}
