// The plant hierarchy (ISA-95 levels down to the tags) in the tower's sidebar.

import { el } from "../../dom.js";

export class HierarchyTree {
  /** `onPrefix(path)` for a level clicked, `onTag(path)` for a tag clicked. */
  constructor(nav, { onPrefix, onTag }) {
    this.nav = nav;
    this.onPrefix = onPrefix;
    this.onTag = onTag;
    this.nodes = new Map(); // path -> .node element
  }

  render(roots) {
    this.nav.replaceChildren();
    this.nodes.clear();
    const build = (nodes, depth) => {
      const ul = el("ul");
      for (const node of nodes) {
        const isTag = node.level === "tag";
        const li = el("li");
        if (!isTag && depth >= 5) li.classList.add("collapsed"); // equipment starts folded
        const caret = el("span", { class: "caret", text: isTag ? "" : "▼" });
        const row = el(
          "div",
          {
            class: isTag ? "node node-tag" : "node",
            title: node.path,
            "data-testid": `tree-node-${node.path}`,
            "data-path": node.path,
          },
          caret,
          isTag ? el("span", { class: "dot q-none" }) : null,
          el("span", { class: "node-name", text: node.name }),
          isTag ? el("span", { class: "level", text: node.unit || "" }) : el("span", { class: "level", text: node.level }),
        );
        caret.addEventListener("click", (e) => {
          e.stopPropagation();
          li.classList.toggle("collapsed");
        });
        row.addEventListener("click", () => {
          if (isTag) this.onTag(node.path);
          else {
            li.classList.remove("collapsed");
            this.onPrefix(node.path);
          }
        });
        this.nodes.set(node.path, row);
        li.append(row);
        if (node.children && node.children.length) li.append(build(node.children, depth + 1));
        ul.append(li);
      }
      return ul;
    };
    this.nav.append(build(roots, 0));
  }

  /** Highlight the selected level and the charted tag. */
  mark(selection, chartPath) {
    for (const [path, row] of this.nodes) {
      row.classList.toggle("selected", path === selection || path === chartPath);
    }
  }

  /** Colour a tag's quality dot. */
  setDot(path, cls) {
    const dot = this.nodes.get(path)?.querySelector(".dot");
    if (dot) dot.className = `dot ${cls}`;
  }
}
