// DOM helpers shared by every page. Data goes into the page through textContent and
// properties only (never innerHTML): with the page's CSP this rules out script injection
// through tag names, descriptions, user names or problem details.

/** `el("td", {class: "value", "data-testid": "x", text: "—"}, child, ...)`. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-") || key === "role" || key === "for") {
      node.setAttribute(key, value === true ? "" : value);
    } else node[key] = value;
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/** `document.getElementById`. */
export const $ = (id) => document.getElementById(id);

/** The element with this data-testid inside `root` (or the document). */
export function byTestId(testid, root = document) {
  return root.querySelector(`[data-testid="${CSS.escape(testid)}"]`);
}
