// A Modbus TCP device served by the npm package modbus-serial (ServerTCP): a peer we
// did not write, for tests/interop/test_modbus_node.py.
// Usage: node modbus_server.js PORT   — prints "LISTENING PORT" once it accepts clients.
"use strict";
const ModbusRTU = require("modbus-serial");

const port = parseInt(process.argv[2], 10);
const holding = new Array(64).fill(0);
const coils = new Array(64).fill(false);
const discrete = [true, false, true];

function f32(value) {
  const b = Buffer.alloc(4);
  b.writeFloatBE(value);
  return [b.readUInt16BE(0), b.readUInt16BE(2)];
}

[holding[0], holding[1]] = f32(12.5); // float32, high word first
holding[2] = 0x10000 - 300; // int16 -300
holding[3] = 0b101; // bits 0 and 2 set
holding[4] = 123456 & 0xffff; // uint32 123456, low word first
holding[5] = 123456 >>> 16;
coils[1] = true;

function illegalAddress() {
  const err = new Error("illegal data address");
  err.modbusErrorCode = 0x02;
  return err;
}

const vector = {
  getInputRegister(addr) {
    if (addr >= 100) throw illegalAddress();
    return addr * 10 + 1;
  },
  getHoldingRegister(addr) {
    if (addr >= holding.length) throw illegalAddress();
    return holding[addr];
  },
  getCoil(addr) {
    if (addr >= coils.length) throw illegalAddress();
    return coils[addr];
  },
  getDiscreteInput(addr) {
    if (addr >= discrete.length) throw illegalAddress();
    return discrete[addr];
  },
  setRegister(addr, value) {
    if (addr >= holding.length) throw illegalAddress();
    holding[addr] = value;
  },
  setCoil(addr, value) {
    if (addr >= coils.length) throw illegalAddress();
    coils[addr] = value;
  },
  readDeviceIdentification() {
    return {
      0x00: "modbus-serial",
      0x01: "MS-TCP",
      0x02: "8.0",
      0x04: "ServerTCP",
      0x05: "interop-1",
    };
  },
};

const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port, unitID: 1 });
server.on("initialized", () => console.log(`LISTENING ${port}`));
server.on("serverError", (err) => {
  console.error(`server error: ${err}`);
  process.exit(1);
});
server.on("socketError", () => {});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
