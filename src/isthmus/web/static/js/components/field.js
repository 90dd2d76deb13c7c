// A labelled form field with its own error line.
//   const name = field({label: "Username", name: "username", required: true});
//   form.append(name.element); ... name.value; name.setError("taken");
// type: any <input> type, "select" (with options: [[value, label], ...] or [value, ...]),
// "textarea" or "checkbox".

import { el } from "../dom.js";

let counter = 0;

export function field({
  label,
  name,
  type = "text",
  value = "",
  options = [],
  hint = "",
  testid = null,
  ...attrs // required, placeholder, autocomplete, min, max, step, maxLength, ...
}) {
  const id = `f-${name}-${++counter}`;
  let input;
  if (type === "select") {
    input = el("select", { id, name, ...attrs },
      options.map((o) => {
        const [v, text] = Array.isArray(o) ? o : [o, o];
        return el("option", { value: v, text, selected: String(v) === String(value) });
      }));
  } else if (type === "textarea") {
    input = el("textarea", { id, name, value, ...attrs });
  } else if (type === "checkbox") {
    input = el("input", { id, name, type, checked: Boolean(value), ...attrs });
  } else {
    input = el("input", { id, name, type, value, ...attrs });
  }
  if (testid) input.setAttribute("data-testid", testid);
  const error = el("p", { class: "field-error", role: "alert" });
  const element = el(
    "div",
    { class: `field field-${type}` },
    el("label", { for: id, text: label }),
    input,
    hint ? el("p", { class: "field-hint", text: hint }) : null,
    error,
  );
  return {
    element,
    input,
    get value() {
      if (type === "checkbox") return input.checked;
      if (type === "number") return input.value === "" ? null : Number(input.value);
      return input.value;
    },
    set value(v) {
      if (type === "checkbox") input.checked = Boolean(v);
      else input.value = v === null || v === undefined ? "" : String(v);
    },
    setError(message = "") {
      error.textContent = message;
      input.setAttribute("aria-invalid", message ? "true" : "false");
    },
  };
}
