// Every page of the UI, in nav-bar order. To add a page: write js/pages/NAME.js whose
// default export is definePage({...}) (see router.js), import it here and list it.

import tower from "./tower.js";

export const PAGES = [tower];
