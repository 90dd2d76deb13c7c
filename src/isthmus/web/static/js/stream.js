// The live WebSocket /api/stream, one per browser tab, shared by the pages.
// The token goes as the first message (browsers cannot set headers on WebSockets); the
// socket reconnects with exponential back-off and re-sends token and subscriptions.
// A page subscribes to UNS prefixes with `stream.subscribe([...])` and listens with
// `stream.on("samples", fn)`; both are undone when the page unmounts.

import { EXPIRED, endSession, getToken } from "./api.js";

export class LiveStream {
  constructor() {
    this.ws = null;
    this.backoff = 500;
    this.timer = null;
    this.stopped = true;
    this.subs = [];
    this.listeners = { samples: new Set(), open: new Set(), status: new Set() };
    this.status = { kind: "off", text: "offline" };
  }

  /** Connect (after login). */
  start() {
    this.stopped = false;
    this.backoff = 500;
    this.connect();
  }

  /** Disconnect for good (logout). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this.subs = [];
    this.setStatus("off", "offline");
  }

  /** Replace the subscribed UNS prefixes ([] = nothing). */
  subscribe(prefixes) {
    this.subs = [...prefixes];
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ subscribe: this.subs }));
    }
  }

  /** `on("samples", fn(samples))`, `on("open", fn())` (catch up after a reconnect),
   * `on("status", fn({kind, text}))`; returns a function that removes the listener. */
  on(event, fn) {
    this.listeners[event].add(fn);
    return () => this.listeners[event].delete(fn);
  }

  emit(event, arg) {
    for (const fn of this.listeners[event]) {
      try {
        fn(arg);
      } catch (err) {
        console.error(err);
      }
    }
  }

  setStatus(kind, text) {
    this.status = { kind, text };
    this.emit("status", this.status);
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/stream`);
    this.ws = ws;
    this.setStatus("wait", "connecting");
    ws.onopen = () => {
      ws.send(JSON.stringify({ token: getToken(), subscribe: this.subs }));
      this.backoff = 500;
      this.setStatus("live", "live");
      this.emit("open"); // pages catch up on what happened while disconnected
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (Array.isArray(message.samples)) this.emit("samples", message.samples);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (event.code === 4401) {
        endSession(EXPIRED);
        return;
      }
      const delay = this.backoff * (0.8 + Math.random() * 0.4);
      this.backoff = Math.min(this.backoff * 2, 10000);
      this.setStatus("off", `reconnecting in ${Math.ceil(delay / 1000)} s`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}
