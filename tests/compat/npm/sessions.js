// The npm `consul` client (unmodified) against a cairn agent: sessions, KV locks, transactions.
// Usage: node sessions.js <host> <port> <node-name>; prints one JSON object of what it saw.
const Consul = require("consul");

async function main() {
  const [host, port, nodeName] = process.argv.slice(2);
  const consul = new Consul({ host, port: Number(port) });
  const out = {};

  // sessions: create with checks and TTL, info, node, list, renew, destroy
  const created = await consul.session.create({
    name: "npm-lock", ttl: "15s", lockdelay: "1s", behavior: "release", checks: ["serfHealth"],
  });
  const id = created.ID;
  out.created = created;
  out.info = await consul.session.info(id);
  out.node = (await consul.session.node(nodeName)).map((s) => s.ID);
  out.list = (await consul.session.list()).map((s) => s.ID);
  out.renew = await consul.session.renew(id);

  // KV: acquire, a second session refused, release
  const other = (await consul.session.create({ name: "npm-other", lockdelay: "0s", checks: [] })).ID;
  out.acquire = await consul.kv.set({ key: "npm/lock", value: "held", acquire: id });
  // a `false` body comes back from this client as undefined (it drops falsy bodies): kept as null
  out.acquireOther = (await consul.kv.set({ key: "npm/lock", value: "stolen", acquire: other })) ?? null;
  out.heldEntry = await consul.kv.get("npm/lock");
  out.release = await consul.kv.set({ key: "npm/lock", value: "free", release: id });
  out.releasedEntry = await consul.kv.get("npm/lock");

  // a transaction with several verbs, then one that fails as a whole
  out.txn = await consul.transaction.create([
    { KV: { Verb: "set", Key: "npm/txn/a", Value: Buffer.from("1").toString("base64") } },
    { KV: { Verb: "lock", Key: "npm/txn/b", Value: Buffer.from("2").toString("base64"), Session: other } },
    { KV: { Verb: "get", Key: "npm/txn/a" } },
  ]);
  try {
    await consul.transaction.create([
      { KV: { Verb: "set", Key: "npm/txn/c", Value: Buffer.from("3").toString("base64") } },
      { KV: { Verb: "check-not-exists", Key: "npm/txn/a" } },
    ]);
    out.txnFailed = null;
  } catch (err) {
    out.txnFailed = { status: err.response && err.response.statusCode, body: err.response && err.response.body };
  }
  out.afterFailed = (await consul.kv.get("npm/txn/c")) ?? null;  // a 404 is undefined

  // destroying the holder releases its lock (behavior release)
  await consul.session.destroy(other);  // resolves with nothing; a failure would throw
  out.destroyed = true;
  out.afterDestroy = await consul.kv.get("npm/txn/b");
  out.infoGone = (await consul.session.info(other)) ?? null;
  await consul.session.destroy(id);
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
