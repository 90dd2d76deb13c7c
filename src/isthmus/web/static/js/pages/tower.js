// The control tower (#/): plant hierarchy, live table of the tags under the selected
// level, and the 15-minute trend of one tag. Data: /api/tags, /api/hierarchy, /api/last,
// the tag's samples, and the shared live stream.

import { api, reportError } from "../api.js";
import { el } from "../dom.js";
import { formatValue, qualityClass, under } from "../format.js";
import { ROLES, definePage } from "../router.js";
import { LiveTable } from "./tower/live-table.js";
import { HierarchyTree } from "./tower/tree.js";
import { TrendChart } from "./tower/trend.js";

// What the tower shows, kept while the user visits other pages (and across a re-login).
const kept = { selection: "", chartPath: null };

export default definePage({
  path: "/",
  label: "Control tower",
  roles: [...ROLES],
  styles: ["/static/vendor/uplot/uPlot.min.css", "/static/css/pages/tower.css"],
  render: (container, ctx) => new Tower(container, ctx).mount(),
});

function layout() {
  return el(
    "div",
    { id: "app-view", class: "app-view" },
    el(
      "aside",
      { class: "sidebar", "aria-label": "Plant hierarchy" },
      el(
        "div",
        { class: "sidebar-head" },
        el("span", { text: "Plant" }),
        el("button", { id: "select-all", class: "btn btn-link", type: "button", "data-testid": "select-all", text: "All tags" }),
      ),
      el("nav", { id: "tree", class: "tree", "data-testid": "tree" }),
    ),
    el(
      "section",
      { class: "content" },
      el(
        "div",
        { class: "panel table-panel" },
        el(
          "div",
          { class: "panel-head" },
          el(
            "div",
            { class: "panel-title" },
            el("h2", { id: "table-title", "data-testid": "table-title", text: "All tags" }),
            el("span", { id: "table-path", class: "crumb" }),
          ),
          el("input", {
            id: "filter",
            class: "filter",
            type: "search",
            placeholder: "Filter tags…",
            "data-testid": "tag-filter",
            "aria-label": "Filter tags",
          }),
        ),
        el(
          "div",
          { class: "table-wrap" },
          el(
            "table",
            { class: "tags", "data-testid": "tag-table" },
            el(
              "thead",
              {},
              el(
                "tr",
                {},
                el("th", { class: "col-name", text: "Tag" }),
                el("th", { class: "col-value", text: "Value" }),
                el("th", { class: "col-unit", text: "Unit" }),
                el("th", { class: "col-quality", text: "Quality" }),
                el("th", { class: "col-age", text: "Updated" }),
              ),
            ),
            el("tbody", { id: "tag-rows" }),
          ),
          el("p", { id: "table-empty", class: "empty", hidden: true, text: "No tags here." }),
        ),
      ),
      el(
        "div",
        { class: "panel chart-panel" },
        el(
          "div",
          { class: "panel-head" },
          el(
            "div",
            { class: "panel-title" },
            el("h2", { id: "chart-title", "data-testid": "chart-title", text: "Trend" }),
            el("span", { id: "chart-value", class: "chart-value", "data-testid": "chart-value" }),
            el("span", { id: "chart-sub", class: "crumb" }),
          ),
          el(
            "div",
            { class: "legend" },
            el("span", { class: "legend-item" }, el("i", { class: "swatch swatch-line" }), "value"),
            el("span", { class: "legend-item", id: "legend-band", hidden: true }, el("i", { class: "swatch swatch-band" }), "min–max"),
            el("span", { class: "legend-item" }, el("i", { class: "swatch swatch-bad" }), "Bad"),
            el("span", { class: "muted", text: "last 15 min" }),
          ),
        ),
        el(
          "div",
          { id: "chart-wrap", class: "chart-wrap" },
          el("div", { id: "chart-empty", class: "chart-empty", "data-testid": "chart-empty", text: "Select a tag to see its trend" }),
        ),
      ),
    ),
  );
}

class Tower {
  constructor(container, ctx) {
    this.ctx = ctx;
    this.stream = ctx.stream;
    this.state = {
      tags: new Map(), // path -> tag
      last: new Map(), // path -> {value, quality, ts}
      selection: "", // UNS prefix shown in the table ("" = all)
      chartPath: null,
    };
    this.root = layout();
    container.append(this.root);
    const q = (id) => this.root.querySelector(`#${id}`);
    this.dom = {
      tableTitle: q("table-title"),
      tablePath: q("table-path"),
      filter: q("filter"),
      chartTitle: q("chart-title"),
      chartValue: q("chart-value"),
      chartSub: q("chart-sub"),
    };
    this.tree = new HierarchyTree(q("tree"), {
      onPrefix: (path) => this.select(path),
      onTag: (path) => {
        this.select(path.slice(0, path.lastIndexOf("/")));
        this.openChart(path);
      },
    });
    this.table = new LiveTable({
      body: q("tag-rows"),
      empty: q("table-empty"),
      state: this.state,
      onOpen: (path) => this.openChart(path),
    });
    this.chart = new TrendChart(q("chart-wrap"), { empty: q("chart-empty"), legendBand: q("legend-band"), tags: this.state.tags });
    q("select-all").addEventListener("click", () => this.select(""));
    this.dom.filter.addEventListener("input", () => this.renderTable());
  }

  async mount() {
    const { signal } = this.ctx;
    let tags;
    let roots;
    try {
      [tags, roots] = await Promise.all([api.get("/api/tags", { signal }), api.get("/api/hierarchy", { signal })]);
    } catch (err) {
      this.chart.destroy(); // the page is not shown: no cleanup will run
      throw err;
    }
    for (const t of tags) this.state.tags.set(t.path, t);
    this.tree.render(roots);
    this.select(kept.selection && !this.isKnownPrefix(kept.selection) ? "" : kept.selection);
    if (kept.chartPath && this.state.tags.has(kept.chartPath)) this.openChart(kept.chartPath);
    const off = [
      this.stream.on("samples", (samples) => this.onSamples(samples)),
      this.stream.on("open", () => {
        // Catch up on what happened while disconnected.
        this.refreshLast().catch(reportError);
        if (this.state.chartPath) this.chart.load(this.state.chartPath).catch(reportError);
      }),
    ];
    const timer = setInterval(() => this.tick(), 1000);
    return () => {
      clearInterval(timer);
      for (const fn of off) fn();
      this.stream.subscribe([]);
      this.chart.destroy();
    };
  }

  isKnownPrefix(prefix) {
    for (const path of this.state.tags.keys()) if (under(path, prefix)) return true;
    return false;
  }

  // ---------------------------------------------------------------- table

  select(prefix) {
    this.state.selection = kept.selection = prefix;
    this.dom.tableTitle.textContent = prefix ? prefix.slice(prefix.lastIndexOf("/") + 1) : "All tags";
    this.dom.tablePath.textContent = prefix || "every tag of the plant";
    this.renderTable();
    this.tree.mark(this.state.selection, this.state.chartPath);
    this.resubscribe();
    this.refreshLast().catch(reportError);
  }

  visibleTags() {
    const filter = this.dom.filter.value.trim().toLowerCase();
    return [...this.state.tags.values()].filter(
      (t) => under(t.path, this.state.selection) && (!filter || t.path.toLowerCase().includes(filter)),
    );
  }

  renderTable() {
    this.table.render(this.visibleTags());
    for (const path of this.table.paths()) this.paintRow(path, false);
  }

  paintRow(path, flash) {
    this.table.paint(path, flash);
    const last = this.state.last.get(path);
    if (!last) return;
    if (path === this.state.chartPath) this.paintChartValue();
    this.tree.setDot(path, qualityClass(last.quality));
  }

  paintChartValue() {
    const badge = this.dom.chartValue;
    const path = this.state.chartPath;
    const last = path ? this.state.last.get(path) : null;
    const tag = path ? this.state.tags.get(path) : null;
    if (!last || !tag) {
      badge.textContent = "";
      return;
    }
    badge.className = `chart-value ${qualityClass(last.quality)}`;
    badge.textContent = `${formatValue(last.value, tag.value_type, tag.enum)}${tag.unit ? ` ${tag.unit}` : ""}`;
  }

  async refreshLast() {
    const prefix = this.state.selection ? `?prefix=${encodeURIComponent(this.state.selection)}` : "";
    const body = await api.get(`/api/last${prefix}`, { signal: this.ctx.signal });
    for (const v of body.values) this.remember(v.path, v.value, v.quality, Date.parse(v.timestamp));
    for (const path of this.table.paths()) this.paintRow(path, false);
  }

  remember(path, value, quality, ts) {
    const known = this.state.last.get(path);
    if (known && known.ts > ts) return false;
    this.state.last.set(path, { value, quality, ts });
    return true;
  }

  // ---------------------------------------------------------------- live

  subscriptions() {
    const { selection, chartPath } = this.state;
    if (!selection) return [];
    const list = [selection];
    if (chartPath && !under(chartPath, selection)) list.push(chartPath);
    return list;
  }

  resubscribe() {
    this.stream.subscribe(this.subscriptions());
  }

  onSamples(samples) {
    const changed = new Set();
    for (const s of samples) {
      const ts = Date.parse(s.timestamp);
      if (this.remember(s.path, s.value, s.quality, ts)) changed.add(s.path);
      if (s.path === this.state.chartPath) this.chart.append(ts, s.value, s.quality);
    }
    for (const path of changed) if (this.table.has(path)) this.paintRow(path, true);
  }

  tick() {
    for (const path of this.table.paths()) this.table.paintAge(path);
    this.chart.schedule(); // scroll the time axis
  }

  // ---------------------------------------------------------------- trend

  openChart(path) {
    this.state.chartPath = kept.chartPath = path;
    const tag = this.state.tags.get(path);
    this.dom.chartTitle.textContent = tag ? tag.name : path;
    this.dom.chartSub.textContent = path;
    this.paintChartValue();
    this.table.markSelected(path);
    this.tree.mark(this.state.selection, path);
    this.resubscribe();
    this.chart.open(path);
    this.chart.load(path).catch(reportError);
  }
}
