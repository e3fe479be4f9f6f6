#!/usr/bin/env node
// Synod from Node.js: the lock service (synod.lock.v1.Lock) and the router
// (synod.router.v1.Router), with stubs loaded at runtime from ../../protos.
//
//   node example.js --lock 127.0.0.1:2385 --router 127.0.0.1:2387
//
// Opens a lock session, acquires and releases a lock (printing the fencing
// token), registers a backend on a ring with a TTL and looks a key up
// (printing the owner). Exits non-zero on any error.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');

function parseArgs(argv) {
  const opts = {
    lock: '127.0.0.1:2385',
    router: '127.0.0.1:2387',
    lockName: 'examples/node',
    ring: 'node-example',
    id: `node-example-${process.pid}`,
    address: '127.0.0.1:9999',
    key: 'alice',
    ttl: 10,
  };
  const names = {
    '--lock': 'lock', '--router': 'router', '--lock-name': 'lockName', '--ring': 'ring',
    '--id': 'id', '--address': 'address', '--key': 'key', '--ttl': 'ttl',
  };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-h' || argv[i] === '--help') {
      console.log(`usage: node example.js [${Object.keys(names).map((n) => `${n} V`).join('] [')}]`);
      process.exit(0);
    }
    const name = names[argv[i]];
    if (!name || i + 1 >= argv.length) {
      console.error(`example.js: unknown or incomplete option ${argv[i]} (try --help)`);
      process.exit(2);
    }
    opts[name] = argv[++i];
  }
  opts.ttl = Number(opts.ttl);
  return opts;
}

function load(file) {
  const def = protoLoader.loadSync(file, {
    includeDirs: [PROTOS],
    keepCase: true, // field names exactly as in the .proto (session_id, ...)
    longs: String, // int64 as decimal strings: no precision loss
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}

// Promisified unary call with a deadline.
function call(client, method, request, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + timeoutMs }, (err, response) => {
      if (err) {
        err.message = `${method}: ${err.message}`;
        reject(err);
      } else {
        resolve(response);
      }
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function lockDemo(Lock, target, opts) {
  const lock = new Lock(target, grpc.credentials.createInsecure());
  try {
    const session = await call(lock, 'OpenSession', { ttl_seconds: opts.ttl });
    const sessionId = session.session_id;
    console.log(`lock: session ${sessionId} open (ttl ${session.ttl_seconds}s)`);
    try {
      const grant = await call(lock, 'Acquire', {
        name: opts.lockName, session_id: sessionId, mode: 'EXCLUSIVE',
      });
      console.log(`lock: acquired ${opts.lockName} fencing token ${grant.fencing_token}`);
      await call(lock, 'Release', { name: opts.lockName, session_id: sessionId });
      console.log(`lock: released ${opts.lockName}`);
    } finally {
      await call(lock, 'CloseSession', { session_id: sessionId });
      console.log(`lock: session ${sessionId} closed`);
    }
  } finally {
    lock.close();
  }
}

async function routerDemo(Router, target, opts) {
  const router = new Router(target, grpc.credentials.createInsecure());
  try {
    const reg = await call(router, 'Register', {
      ring: opts.ring, id: opts.id, address: opts.address, weight: 1, ttl_seconds: opts.ttl,
    });
    console.log(
      `router: registered ${opts.id} (${opts.address}) on ring ${opts.ring} ` +
        `lease ${reg.lease_id} ttl ${reg.ttl_seconds}s at revision ${reg.revision}`,
    );
    // A replica answers from the membership it has applied so far: wait until
    // its answer reflects our write (revision >= the Register's).
    const deadline = Date.now() + 10000;
    for (;;) {
      let res = null;
      try {
        res = await call(router, 'Lookup', { ring: opts.ring, key: Buffer.from(opts.key), replicas: 1 });
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
      if (res && BigInt(res.revision) >= BigInt(reg.revision) && res.members.length > 0) {
        const owner = res.members[0];
        console.log(`router: key ${opts.key} owner ${owner.id} (${owner.address}) at revision ${res.revision}`);
        break;
      }
      if (Date.now() > deadline) throw new Error(`Lookup: ring ${opts.ring} did not catch up with revision ${reg.revision}`);
      await sleep(100);
    }
    const dereg = await call(router, 'Deregister', { ring: opts.ring, id: opts.id });
    console.log(`router: deregistered ${opts.id} (existed ${dereg.existed})`);
  } finally {
    router.close();
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { Lock } = load('synod/lock/v1/lock.proto').synod.lock.v1;
  const { Router } = load('synod/router/v1/router.proto').synod.router.v1;
  await lockDemo(Lock, opts.lock, opts);
  await routerDemo(Router, opts.router, opts);
}

main().catch((err) => {
  console.error(`example.js: ${err.message}`);
  process.exit(1);
});
