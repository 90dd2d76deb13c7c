// The nav bar in the header: the pages the user's role may see. Hidden while there is
// only one such page (the control tower alone needs no menu).

import { el } from "../dom.js";
import { href, navPages } from "../router.js";

export class NavBar {
  constructor(element) {
    this.element = element;
    this.links = new Map(); // page.path -> <a>
  }

  /** Build the links for `role`. */
  render(role) {
    const pages = navPages(role);
    this.links.clear();
    this.element.replaceChildren(
      ...pages.map((page) => {
        const slug = page.path.split("/")[1] || "home";
        const a = el("a", { class: "nav-link", href: href(page.path), text: page.label, "data-testid": `nav-${slug}` });
        this.links.set(page.path, a);
        return a;
      }),
    );
    this.element.hidden = pages.length < 2;
  }

  /** Mark the page shown (null: none). */
  setActive(page) {
    for (const [path, a] of this.links) {
      const active = Boolean(page) && page.path === path;
      a.classList.toggle("active", active);
      if (active) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  clear() {
    this.links.clear();
    this.element.replaceChildren();
    this.element.hidden = true;
  }
}
