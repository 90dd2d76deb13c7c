// A data table for list pages (users, tokens, commands, audit...).
//   const t = dataTable({columns: [{label: "User", value: (u) => u.username}, ...],
//                        key: (u) => u.username, testid: "user-table", onRowClick: open});
//   page.append(t.element); t.update(users);
// A column: {label, value(row) -> string | Node, class?}. Cells are text or nodes (never HTML).

import { el } from "../dom.js";

export function dataTable({ columns, rows = [], key = null, empty = "Nothing here.", testid = null, onRowClick = null }) {
  const body = el("tbody");
  const emptyLine = el("p", { class: "empty", text: empty, hidden: true });
  const table = el(
    "table",
    { class: "data-table", "data-testid": testid },
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.class, text: c.label })))),
    body,
  );
  const element = el("div", { class: "table-wrap" }, table, emptyLine);

  function update(list) {
    body.replaceChildren(
      ...list.map((row) => {
        const tr = el(
          "tr",
          { "data-testid": testid ? `${testid}-row` : null, "data-key": key ? String(key(row)) : null },
          columns.map((c) => {
            const v = c.value ? c.value(row) : row[c.key];
            return el("td", { class: c.class }, v instanceof Node ? v : v === null || v === undefined ? "—" : String(v));
          }),
        );
        if (onRowClick) {
          tr.classList.add("clickable");
          tr.addEventListener("click", () => onRowClick(row));
        }
        return tr;
      }),
    );
    emptyLine.hidden = list.length > 0;
  }

  update(rows);
  return { element, update };
}
