// An independent Sparkplug B peer for the interop tests (Eclipse Tahu JS).
//   node sparkplug_peer.js edge PORT     an edge node (sparkplug-client): births, data
//                                        every 100 ms, rebirth on NCMD; prints "ncmd ..."
//   node sparkplug_peer.js listen PORT   decodes spBv1.0/isthmus/# (sparkplug-payload)
//                                        and prints one JSON line per message
"use strict";
const [mode, port] = process.argv.slice(2);
const url = `mqtt://127.0.0.1:${port}`;

function plain(value) {
  if (value && typeof value.toNumber === "function") return value.toNumber();
  if (Buffer.isBuffer(value)) return value.toString("hex");
  return value;
}

if (mode === "edge") {
  const sparkplug = require("sparkplug-client");
  const client = sparkplug.newClient({
    serverUrl: url, username: "", password: "", groupId: "tahu", edgeNode: "js1",
    clientId: "tahu-js1", version: "spBv1.0", keepalive: 2,
  });
  let n = 0;
  const births = () => {
    client.publishNodeBirth({
      timestamp: Date.now(),
      metrics: [
        { name: "Node Control/Rebirth", type: "Boolean", value: false },
        { name: "temp", alias: 1, type: "Double", value: 20.5 },
        { name: "recipe", alias: 3, type: "String", value: "R-0 crème" },
      ],
    });
    client.publishDeviceBirth("dev1", {
      timestamp: Date.now(),
      metrics: [{ name: "Motor/Level", alias: 2, type: "Int32", value: -7 }],
    });
    console.log("births");
  };
  client.on("birth", births);
  client.on("ncmd", (payload) => {
    for (const m of payload.metrics) console.log(`ncmd ${m.name}=${plain(m.value)}`);
    if (payload.metrics.some((m) => m.name === "Node Control/Rebirth" && m.value)) births();
  });
  setInterval(() => {
    if (!client.connected) return;
    n += 1;
    client.publishDeviceData("dev1", {
      timestamp: Date.now(),
      metrics: [{ alias: 2, type: "Int32", value: -7 - n }],
    });
    client.publishNodeData({
      timestamp: Date.now(),
      metrics: [
        { alias: 1, type: "Double", value: 20.5 + n },
        { alias: 3, type: "String", value: `R-${n} crème` },
      ],
    });
  }, 100);
} else if (mode === "listen") {
  const mqtt = require("mqtt");
  const payloads = require("sparkplug-payload").get("spBv1.0");
  const client = mqtt.connect(url, { clientId: "tahu-listener" });
  client.on("connect", () => {
    client.subscribe("spBv1.0/isthmus/#", () => console.log(JSON.stringify({ ready: true })));
  });
  client.on("message", (topic, message) => {
    const p = payloads.decodePayload(message);
    const metrics = (p.metrics || []).map((m) => ({
      name: m.name, alias: plain(m.alias), type: m.type, value: plain(m.value),
      isNull: m.isNull === true,
    }));
    console.log(JSON.stringify({ topic, seq: plain(p.seq), metrics }));
  });
} else {
  console.error("usage: sparkplug_peer.js edge|listen PORT");
  process.exit(2);
}
