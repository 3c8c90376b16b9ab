// An HTTP/1.1 service that calls another one (mop's propagation experiment): every request is
// answered after a GET /ok to 127.0.0.1:UPSTREAM over a keep-alive agent, all on Node's event
// loop. It sends no trace header of its own.
//   node proxy.js PORT UPSTREAM   (prints `port N`)
'use strict';
const http = require('http');
const [portArg, upstreamArg] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
const server = http.createServer((req, res) => {
  http.get({ host: '127.0.0.1', port: Number(upstreamArg), path: '/ok', agent }, (up) => {
    const chunks = [];
    up.on('data', (c) => chunks.push(c));
    up.on('end', () => {
      const body = Buffer.concat([Buffer.from('proxied '), ...chunks]);
      res.writeHead(up.statusCode === 200 ? 200 : 502, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
  }).on('error', () => { res.writeHead(502, { 'content-length': 0 }); res.end(); });
});
server.keepAliveTimeout = 60000;
server.listen(Number(portArg), '127.0.0.1', () => console.log(`port ${server.address().port}`));
