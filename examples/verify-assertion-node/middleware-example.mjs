// An upstream behind scopegate: every request must carry a valid assertion bound to its own method and path.
// Run: SCOPEGATE_JWKS=http://127.0.0.1:8080/.well-known/scopegate/jwks.json node middleware-example.mjs
import http from 'node:http';
import { loadJwks, verifyAssertion } from './verify.mjs';

const JWKS_URL = process.env.SCOPEGATE_JWKS ?? 'http://127.0.0.1:8080/.well-known/scopegate/jwks.json';
const AUDIENCE = process.env.SCOPEGATE_AUDIENCE ?? 'openclaw-gateway';
let jwks = await loadJwks(JWKS_URL);
let lastRefresh = Date.now();

async function check(req) {
  // Use the raw request target: new URL() would read "//host/x" as a host and normalise "/a/../b",
  // while htp binds the exact path. verifyAssertion drops the query itself.
  const path = req.url.startsWith('/') ? req.url : new URL(req.url).pathname;
  const opts = () => ({ jwks, audience: AUDIENCE, method: req.method, path });
  const token = req.headers['x-scopegate-assertion'];
  try {
    return await verifyAssertion(token, opts());
  } catch (e) {
    // An unknown kid may mean scopegate rotated its key. Refetch at most every 30 s, so forged
    // kids cannot make us hammer the JWKS endpoint.
    if (e.code !== 'ERR_ASSERTION_UNKNOWN_KID' || Date.now() - lastRefresh < 30_000) throw e;
    lastRefresh = Date.now();
    jwks = await loadJwks(JWKS_URL);
    return verifyAssertion(token, opts());
  }
}

http
  .createServer(async (req, res) => {
    try {
      const claims = await check(req);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ hello: claims.sub, via: claims.amr, scopes: String(claims.scope ?? '').split(' ').filter(Boolean) }));
    } catch (e) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { type: 'unauthorized', message: e.message } }));
    }
  })
  .listen(Number(process.env.PORT ?? 18789), '127.0.0.1');
