// An upstream that trusts scopegate: every request must carry a valid assertion bound to its own
// method and path. Run: SCOPEGATE_JWKS=http://127.0.0.1:8080/.well-known/scopegate/jwks.json node middleware-example.mjs
import http from 'node:http';
import { loadJwks, verifyAssertion } from './verify.mjs';

const JWKS_URL = process.env.SCOPEGATE_JWKS ?? 'http://127.0.0.1:8080/.well-known/scopegate/jwks.json';
const AUDIENCE = process.env.SCOPEGATE_AUDIENCE ?? 'openclaw-gateway';
let jwks = await loadJwks(JWKS_URL);

http
  .createServer(async (req, res) => {
    const path = new URL(req.url, 'http://upstream').pathname;
    try {
      let claims;
      try {
        claims = await verifyAssertion(req.headers['x-scopegate-assertion'], { jwks, audience: AUDIENCE, method: req.method, path });
      } catch (e) {
        // scopegate may have rotated its key: refresh the JWKS once and try again.
        if (!/no published key/.test(e.message)) throw e;
        jwks = await loadJwks(JWKS_URL);
        claims = await verifyAssertion(req.headers['x-scopegate-assertion'], { jwks, audience: AUDIENCE, method: req.method, path });
      }
      const scopes = new Set(String(claims.scope).split(' ').filter(Boolean));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ hello: claims.sub, via: claims.amr, scopes: [...scopes] }));
    } catch (e) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { type: 'unauthorized', message: e.message } }));
    }
  })
  .listen(Number(process.env.PORT ?? 18789), '127.0.0.1');
