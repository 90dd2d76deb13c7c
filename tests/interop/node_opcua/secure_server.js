// A node-opcua server for tests/interop/test_opcua_node.py: SignAndEncrypt only
// (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss), no anonymous access,
// one user "operator" whose password comes from the environment (OPCUA_PASSWORD).
//
//   node secure_server.js PORT PKI_DIR CLIENT_CERT.der
//
// PKI_DIR is the server's own PKI store (own/, trusted/, rejected/), created here. Unknown
// client certificates are REFUSED (automaticallyAcceptUnknownCertificate: false); the
// one client the test uses is trusted explicitly through the certificate manager's
// trustCertificate(), which files it under PKI_DIR/trusted/certs.
//
// Variables (namespace urn:isthmus:interop:node-opcua, folder Objects/Plant):
//   ns=1;s=Plant.Counter      UInt32, +1 every 50 ms
//   ns=1;s=Plant.Temperature  Double, 20 + 5*sin(t), every 50 ms
//   ns=1;s=Plant.State        Int32, cycles 0..4 every 50 ms
//   ns=1;s=Plant.Setpoint     Double, writable (initial 42.5)
//   ns=1;s=Plant.Mode         Int16, writable (initial 1)
// Prints "LISTENING <port> <server certificate file>" once ready.
"use strict";
const fs = require("fs");
const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    MessageSecurityMode,
    SecurityPolicy,
    DataType,
    Variant,
    StatusCodes,
} = require("node-opcua");

async function main() {
    const [port, pkiDir, clientCert] = process.argv.slice(2);
    const password = process.env.OPCUA_PASSWORD;
    if (!port || !pkiDir || !clientCert || !password) {
        console.error("usage: OPCUA_PASSWORD=... node secure_server.js PORT PKI_DIR CLIENT_CERT");
        process.exit(2);
    }
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: pkiDir,
        automaticallyAcceptUnknownCertificate: false,
        disableFileWatchers: true,
    });
    await serverCertificateManager.initialize();
    await serverCertificateManager.trustCertificate(fs.readFileSync(clientCert));

    const server = new OPCUAServer({
        port: Number(port),
        hostname: "127.0.0.1",
        alternateHostname: ["127.0.0.1", "localhost"],
        serverCertificateManager,
        securityModes: [MessageSecurityMode.SignAndEncrypt],
        securityPolicies: [
            SecurityPolicy.Basic256Sha256,
            SecurityPolicy.Aes128_Sha256_RsaOaep,
            SecurityPolicy.Aes256_Sha256_RsaPss,
        ],
        allowAnonymous: false,
        userManager: {
            isValidUser: (username, pass) => username === "operator" && pass === password,
        },
        buildInfo: { buildNumber: "interop" }, // node-opcua fills in its name and version
        serverInfo: { applicationUri: "urn:isthmus:interop:node-opcua-server" },
    });
    await server.initialize();

    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.getOwnNamespace();
    const plant = ns.addFolder(addressSpace.rootFolder.objects, {
        browseName: "Plant",
        nodeId: "s=Plant",
    });
    const add = (name, dataType, value, writable) =>
        ns.addVariable({
            organizedBy: plant,
            browseName: name,
            nodeId: `s=Plant.${name}`,
            dataType,
            accessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            userAccessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
            value: new Variant({ dataType: DataType[dataType], value }),
        });
    const counter = add("Counter", "UInt32", 0, false);
    const temperature = add("Temperature", "Double", 20.0, false);
    const state = add("State", "Int32", 0, false);
    add("Setpoint", "Double", 42.5, true);
    add("Mode", "Int16", 1, true);

    let k = 0;
    setInterval(() => {
        k += 1;
        const good = StatusCodes.Good;
        counter.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: k }), good);
        temperature.setValueFromSource(
            new Variant({ dataType: DataType.Double, value: 20 + 5 * Math.sin(k / 10) }),
            good
        );
        state.setValueFromSource(new Variant({ dataType: DataType.Int32, value: k % 5 }), good);
    }, 50);

    await server.start();
    console.log(`LISTENING ${port} ${path.resolve(server.certificateFile)}`);
    const stop = async () => {
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
