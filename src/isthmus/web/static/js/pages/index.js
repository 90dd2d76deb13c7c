// Every page of the UI, in nav-bar order. To add a page: write js/pages/NAME.js whose
// default export is definePage({...}) (see router.js), import it here and list it.

import tower from "./tower.js";
import commands from "./commands.js";
import commandDetail from "./commands-detail.js";
import approvals from "./approvals.js";
import account from "./account.js";
import users from "./users.js";
import tokens from "./tokens.js";

export const PAGES = [tower, commands, approvals, users, tokens, account, commandDetail];
