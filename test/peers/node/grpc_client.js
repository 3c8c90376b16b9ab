#!/usr/bin/env node
// A @grpc/grpc-js client for mop's integration tests: the client side of ../grpc_peer.py with
// the same command protocol, from another gRPC implementation.
//
//   node grpc_client.js PORT [--tls DIR]
//
// One channel to 127.0.0.1:PORT (plaintext, or TLS trusting DIR/ca.pem). Prints `ready` once
// it reads commands on stdin, one per line, and prints one JSON object per command:
// {"codes": [status code numbers, one per call]} plus per-command fields. Commands: unary N,
// concurrent N, server_stream K, client_stream K, missing, broken, slow MS DEADLINE_MS, quit
// (see ../grpc_peer.py for the service).
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');

const SERVICE = 'mop.test.Echo';
const identity = (b) => b;

function main() {
  const args = process.argv.slice(2);
  const port = Number(args[0]);
  const tlsAt = args.indexOf('--tls');
  const creds =
    tlsAt >= 0
      ? grpc.credentials.createSsl(fs.readFileSync(path.join(args[tlsAt + 1], 'ca.pem')))
      : grpc.credentials.createInsecure();
  const client = new grpc.Client(`127.0.0.1:${port}`, creds);
  const method = (m) => `/${SERVICE}/${m}`;

  const unary = (m, payload, options = {}) =>
    new Promise((resolve) => {
      client.makeUnaryRequest(method(m), identity, identity, Buffer.from(payload),
        new grpc.Metadata(), options, (err) => resolve(err ? err.code : 0));
    });

  const commands = {
    async unary(n) {
      const codes = [];
      for (let i = 0; i < n; i++) codes.push(await unary('Unary', 'hello'));
      return { codes };
    },
    async concurrent(n) {
      const calls = [];
      for (let i = 0; i < n; i++) calls.push(unary('Unary', `hello ${i}`));
      return { codes: await Promise.all(calls) };
    },
    server_stream(k) {
      return new Promise((resolve) => {
        let messages = 0;
        const call = client.makeServerStreamRequest(method('ServerStream'), identity, identity,
          Buffer.from(String(k)), new grpc.Metadata(), {});
        call.on('data', () => { messages += 1; });
        call.on('error', (err) => resolve({ codes: [err.code], messages }));
        call.on('status', (s) => { if (s.code === 0) resolve({ codes: [0], messages }); });
      });
    },
    client_stream(k) {
      return new Promise((resolve) => {
        const call = client.makeClientStreamRequest(method('ClientStream'), identity, identity,
          new grpc.Metadata(), {}, (err, reply) =>
            resolve(err ? { codes: [err.code] } : { codes: [0], reply: reply.toString() }));
        for (let i = 0; i < k; i++) call.write(Buffer.from('x'.repeat(10)));
        call.end();
      });
    },
    async missing() { return { codes: [await unary('Missing', '?')] }; },
    async broken() { return { codes: [await unary('Broken', '!')] }; },
    async slow(ms, deadlineMs) {
      const deadline = new Date(Date.now() + deadlineMs);
      return { codes: [await unary('Slow', String(ms), { deadline })] };
    },
  };

  const lines = readline.createInterface({ input: process.stdin });
  const queue = [];
  let busy = false;
  const next = async () => {
    if (busy || queue.length === 0) return;
    busy = true;
    const words = queue.shift().trim().split(/\s+/);
    const [cmd, ...rest] = words;
    if (cmd === 'quit') {
      client.close();
      process.exit(0);
    }
    const fn = commands[cmd];
    const out = fn ? await fn(...rest.map(Number)) : { error: `unknown command ${cmd}` };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    busy = false;
    next();
  };
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    queue.push(line);
    next();
  });
  lines.on('close', () => { queue.push('quit'); next(); });
  process.stdout.write('ready\n');
}

main();
