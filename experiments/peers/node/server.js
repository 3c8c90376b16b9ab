// Node servers for mop's coverage matrix; each answers GET /cov (or the gRPC method
// mop.bench.Echo/Say) and prints `port N` once it listens on 127.0.0.1.
//   node server.js h1 PORT             http (HTTP/1.1)
//   node server.js h2c PORT            http2.createServer (HTTP/2 cleartext, prior knowledge)
//   node server.js tls PORT CERT KEY   https (HTTP/1.1 over TLS: Node's OpenSSL)
//   node server.js grpc PORT           @grpc/grpc-js (installed by the coverage experiment)
'use strict';
const fs = require('fs');
const [mode, portArg, cert, key] = process.argv.slice(2);
const port = Number(portArg);
const BODY = 'covered\n';
function handler(req, res) {
  const ok = req.url === '/cov';
  res.writeHead(ok ? 200 : 404, { 'content-type': 'text/plain', 'content-length': BODY.length });
  res.end(BODY);
}
function announce(server) {
  server.listen(port, '127.0.0.1', () => console.log(`port ${server.address().port}`));
}
if (mode === 'h1') {
  announce(require('http').createServer(handler));
} else if (mode === 'h2c') {
  announce(require('http2').createServer(handler));
} else if (mode === 'tls') {
  announce(require('https').createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, handler));
} else if (mode === 'grpc') {
  const grpc = require('@grpc/grpc-js');
  const server = new grpc.Server();
  const id = (b) => b;
  server.addService({
    Say: { path: '/mop.bench.Echo/Say', requestStream: false, responseStream: false,
      requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
  }, { Say: (call, cb) => cb(null, call.request) });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => {
    if (err) { console.error(err); process.exit(1); }
    console.log(`port ${p}`);
  });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
