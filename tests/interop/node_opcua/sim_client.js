// A node-opcua client against our simulator's OPC UA server (security None, anonymous),
// for tests/interop/test_opcua_node.py. Browses, reads, subscribes and writes, then
// prints one line "RESULT <json>" on stdout; the Python test checks it against the
// simulator.
//
//   node sim_client.js ENDPOINT SECONDS NODE_ID... [--write NODE_ID=DOUBLE]
//
// Output: {namespaces, browse: {path: [browse names]}, reads: {node: {value, dataType,
// status}}, changes: {node: [values]}, write: {node, status}}
"use strict";
const {
    OPCUAClient,
    AttributeIds,
    TimestampsToReturn,
    DataType,
    MessageSecurityMode,
    SecurityPolicy,
    ClientMonitoredItemGroup,
} = require("node-opcua");

async function browseNames(session, nodeId) {
    const result = await session.browse(nodeId);
    return (result.references || []).map((r) => r.browseName.name);
}

async function main() {
    const args = process.argv.slice(2);
    const endpoint = args[0];
    const seconds = Number(args[1]);
    const nodes = [];
    let write = null;
    for (let i = 2; i < args.length; i++) {
        if (args[i] === "--write") {
            const spec = args[++i];
            const cut = spec.lastIndexOf("=");
            write = { node: spec.slice(0, cut), value: Number(spec.slice(cut + 1)) };
        } else {
            nodes.push(args[i]);
        }
    }
    const client = OPCUAClient.create({
        endpointMustExist: false,
        securityMode: MessageSecurityMode.None,
        securityPolicy: SecurityPolicy.None,
        connectionStrategy: { maxRetry: 2, initialDelay: 200, maxDelay: 1000 },
    });
    await client.connect(endpoint);
    const session = await client.createSession();
    const out = { browse: {}, reads: {}, changes: {}, write: null };

    out.namespaces = (await session.readNamespaceArray()) || [];
    out.browse["Objects"] = await browseNames(session, "ns=0;i=85");
    for (const folder of ["Line1", "Line1.Filler", "Line1.Setpoints"]) {
        out.browse[folder] = await browseNames(session, `ns=2;s=${folder}`);
    }

    const read = await session.read(
        nodes.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value }))
    );
    nodes.forEach((nodeId, i) => {
        const dv = read[i];
        out.reads[nodeId] = {
            value: dv.value.value,
            dataType: DataType[dv.value.dataType],
            status: dv.statusCode.name,
        };
        out.changes[nodeId] = [];
    });

    const subscription = await session.createSubscription2({
        requestedPublishingInterval: 100,
        requestedLifetimeCount: 100,
        requestedMaxKeepAliveCount: 10,
        maxNotificationsPerPublish: 0,
        publishingEnabled: true,
        priority: 1,
    });
    const group = ClientMonitoredItemGroup.create(
        subscription,
        nodes.map((nodeId) => ({ nodeId, attributeId: AttributeIds.Value })),
        { samplingInterval: 100, discardOldest: true, queueSize: 10 },
        TimestampsToReturn.Both
    );
    group.on("changed", (item, dataValue) => {
        const nodeId = item.itemToMonitor.nodeId.toString();
        if (dataValue.statusCode.name === "Good" && nodeId in out.changes) {
            out.changes[nodeId].push(dataValue.value.value);
        }
    });
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));

    if (write) {
        const status = await session.write({
            nodeId: write.node,
            attributeId: AttributeIds.Value,
            value: { value: { dataType: DataType.Double, value: write.value } },
        });
        out.write = { node: write.node, status: status.name };
    }
    await subscription.terminate();
    await session.close();
    await client.disconnect();
    process.stdout.write("RESULT " + JSON.stringify(out) + "\n"); // node-opcua logs to stdout too
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
