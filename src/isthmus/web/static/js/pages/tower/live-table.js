// The tower's table of tags under the selected level, painted live as samples arrive.

import { el } from "../../dom.js";
import { formatAge, formatValue, isTextTag, qualityClass } from "../../format.js";

export class LiveTable {
  /** `state`: the tower's {tags, last, selection, chartPath}; `onOpen(path)` on a row click. */
  constructor({ body, empty, state, onOpen }) {
    this.body = body;
    this.empty = empty;
    this.state = state;
    this.onOpen = onOpen;
    this.rows = new Map(); // path -> {tr, value, quality, age}
  }

  render(tags) {
    const { selection, chartPath } = this.state;
    this.body.replaceChildren();
    this.rows.clear();
    this.empty.hidden = tags.length > 0;
    for (const tag of tags) {
      const rel = selection ? tag.path.slice(selection.length + 1) : tag.path;
      const equipment = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
      const value = el("td", { class: "value", "data-testid": `value-${tag.path}` });
      const quality = el("td", { "data-testid": `quality-${tag.path}` });
      const age = el("td", { class: "age" });
      const tr = el(
        "tr",
        { "data-testid": "tag-row", "data-path": tag.path, title: tag.description || tag.path },
        el("td", {}, el("span", { class: "tag-name", text: tag.name }), equipment ? el("span", { class: "tag-eq", text: equipment }) : null),
        value,
        el("td", { class: "unit", text: tag.unit }),
        quality,
        age,
      );
      tr.classList.toggle("selected", tag.path === chartPath);
      tr.addEventListener("click", () => this.onOpen(tag.path));
      this.body.append(tr);
      this.rows.set(tag.path, { tr, value, quality, age });
    }
  }

  has(path) {
    return this.rows.has(path);
  }

  paths() {
    return this.rows.keys();
  }

  /** Paint a row from state.last; `flash` marks a live change. */
  paint(path, flash) {
    const row = this.rows.get(path);
    if (!row) return;
    const tag = this.state.tags.get(path);
    const last = this.state.last.get(path);
    if (!last) {
      row.value.textContent = "—";
      row.quality.replaceChildren(el("span", { class: "quality q-none" }, el("span", { class: "dot" }), "no data"));
      row.age.textContent = "";
      return;
    }
    const text = formatValue(last.value, tag ? tag.value_type : "float64", tag ? tag.enum : null);
    row.value.classList.toggle("text", isTextTag(tag));
    if (row.value.textContent !== text) {
      row.value.textContent = text;
      row.value.title = isTextTag(tag) ? text : "";
      if (flash) {
        row.value.classList.remove("flash");
        void row.value.offsetWidth; // restart the animation
        row.value.classList.add("flash");
      }
    }
    if (row.quality.dataset.q !== last.quality) {
      row.quality.dataset.q = last.quality;
      row.quality.replaceChildren(
        el("span", { class: `quality ${qualityClass(last.quality)}` }, el("span", { class: "dot" }), last.quality),
      );
    }
    this.paintAge(path);
  }

  paintAge(path) {
    const row = this.rows.get(path);
    const last = this.state.last.get(path);
    if (!row || !last) return;
    const age = Date.now() - last.ts;
    row.age.textContent = formatAge(age);
    row.age.classList.toggle("stale", age > 60000);
  }

  /** Highlight the charted tag's row. */
  markSelected(path) {
    for (const [p, row] of this.rows) row.tr.classList.toggle("selected", p === path);
  }
}
