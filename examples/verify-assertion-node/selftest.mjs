// Self-contained test of verify.mjs: mints its own assertions with fresh keys, no network beyond
// 127.0.0.1, no packages. Run: node selftest.mjs (exits non-zero if any case fails).
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { verifyAssertion, loadJwks, ASSERTION_TYP } from './verify.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

// Keys: one of each kind scopegate can sign with.
const ed = crypto.generateKeyPairSync('ed25519');
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const hmacSecret = crypto.randomBytes(32).toString('base64url');
const jwk = (pub, kid, alg) => ({ ...pub.export({ format: 'jwk' }), kid, alg, use: 'sig' });
const jwks = { keys: [jwk(ed.publicKey, 'ed-1', 'EdDSA'), jwk(ec.publicKey, 'ec-1', 'ES256')] };
const HS_KID = 'hs-1';

const AUD = 'openclaw-gateway';
const NOW = Math.floor(Date.now() / 1000);

function claims(over = {}) {
  // Same members, in the same order, as scopegate mints them.
  return {
    iss: 'scopegate', aud: AUD, sub: 'dev', amr: ['jwt'], scope: 'operator.read operator.write',
    iat: NOW, exp: NOW + 60, jti: crypto.randomBytes(16).toString('base64url'),
    client_ip: '127.0.0.1', htm: 'POST', htp: '/v1/responses', ...over,
  };
}

/** Signs with the real key for `alg`; `header` overrides let cases lie about alg/kid/typ. */
function mint({ alg = 'EdDSA', header = {}, payload = claims(), signAs = alg, secret = hmacSecret } = {}) {
  const kid = { EdDSA: 'ed-1', ES256: 'ec-1', HS256: HS_KID }[alg] ?? 'ed-1';
  const input = `${b64({ alg, typ: ASSERTION_TYP, kid, ...header })}.${b64(payload)}`;
  let sig;
  if (signAs === 'EdDSA') sig = crypto.sign(null, Buffer.from(input), ed.privateKey);
  else if (signAs === 'ES256') sig = crypto.sign('sha256', Buffer.from(input), { key: ec.privateKey, dsaEncoding: 'ieee-p1363' });
  else if (signAs === 'ES256-DER') sig = crypto.sign('sha256', Buffer.from(input), ec.privateKey);
  else if (signAs === 'HS256') sig = crypto.createHmac('sha256', secret).update(input).digest();
  else sig = Buffer.alloc(0);
  return `${input}.${sig.toString('base64url')}`;
}

function tamperScope(token) {
  const [h, p, s] = token.split('.');
  const c = JSON.parse(Buffer.from(p, 'base64url'));
  c.scope += ' operator.admin';
  return `${h}.${b64(c)}.${s}`;
}

const opts = (over = {}) => ({ jwks, hmacSecret, audience: AUD, method: 'POST', path: '/v1/responses', ...over });

let failures = 0;
function report(ok, name, detail) {
  if (!ok) failures++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
}
async function accepts(name, token, o = opts()) {
  try {
    const c = await verifyAssertion(token, o);
    report(c.sub === 'dev' && c.htp === '/v1/responses', name, `sub=${c.sub}`);
  } catch (e) {
    report(false, name, `refused: ${e.message}`);
  }
}
/** Must be refused, and for the expected reason (a regex on the message). */
async function refuses(name, token, reason, o = opts()) {
  try {
    await verifyAssertion(token, o);
    report(false, name, 'accepted');
  } catch (e) {
    report(reason.test(e.message), name, e.message);
  }
}

// --- library ---
const good = mint();
await accepts('valid EdDSA', good);
await accepts('valid ES256', mint({ alg: 'ES256' }));
await accepts('valid HS256', mint({ alg: 'HS256' }));
await accepts('valid, aud as array', mint({ payload: claims({ aud: ['other', AUD] }) }));
await accepts('valid, method compared case-insensitively', good, opts({ method: 'post' }));
await accepts('valid, caller passes the query string', good, opts({ path: '/v1/responses?stream=true' }));
await accepts('valid, no method/path binding asked for', good, opts({ method: undefined, path: undefined }));
await accepts('valid, expired 3 s ago is within leeway', mint({ payload: claims({ exp: NOW - 3 }) }));

await refuses('tampered payload (scope)', tamperScope(good), /signature/);
await refuses('tampered payload, ES256', tamperScope(mint({ alg: 'ES256' })), /signature/);
await refuses('tampered payload, HS256', tamperScope(mint({ alg: 'HS256' })), /signature/);
await refuses('HS256 with the wrong secret', mint({ alg: 'HS256', secret: crypto.randomBytes(32) }), /signature/);
await refuses('HS256 with no secret configured', mint({ alg: 'HS256' }), /no shared secret/, opts({ hmacSecret: undefined }));
await refuses('HS256 with a short secret configured', mint({ alg: 'HS256', secret: 'short' }), /at least 32/, opts({ hmacSecret: 'short' }));
await refuses('ES256 with a DER signature', mint({ alg: 'ES256', signAs: 'ES256-DER' }), /signature/);
await refuses('wrong audience', good, /aud/, opts({ audience: 'another-service' }));
await refuses('wrong issuer', mint({ payload: claims({ iss: 'someone-else' }) }), /iss/);
await refuses('expired', mint({ payload: claims({ iat: NOW - 120, exp: NOW - 60 }) }), /expired/);
await refuses('iat in the future', mint({ payload: claims({ iat: NOW + 60, exp: NOW + 120 }) }), /future/);
await refuses('wrong typ', mint({ header: { typ: 'JWT' } }), /typ/);
await refuses('no typ', mint({ header: { typ: undefined } }), /typ/);
await refuses('alg none', mint({ header: { alg: 'none' }, signAs: 'none' }), /alg "none" is not accepted/);
await refuses('alg RS256', mint({ header: { alg: 'RS256' } }), /not accepted/);
// The classic confusion: HMAC keyed with the published key, which everyone knows.
// The verifier is even configured with that very secret, so only the pinning can stop it.
await refuses('alg HS256 for an Ed25519 kid', mint({ alg: 'HS256', header: { kid: 'ed-1' }, secret: jwks.keys[0].x }), /does not match the key's pinned/,
  opts({ hmacSecret: jwks.keys[0].x }));
await refuses('alg ES256 for an Ed25519 kid', mint({ alg: 'ES256', header: { kid: 'ed-1' } }), /does not match the key's pinned/);
await refuses('key alg contradicts its family', mint(), /cannot verify EdDSA/,
  opts({ jwks: { keys: [{ ...jwks.keys[1], kid: 'ed-1', alg: 'EdDSA' }] } }));
await refuses('unknown kid', mint({ header: { kid: 'rotated-away' } }), /no published key/);
await refuses('no kid', mint({ header: { kid: undefined } }), /no kid/);
await refuses('crit header', mint({ header: { crit: ['exp'] } }), /crit/);
await refuses('method mismatch', good, /htm/, opts({ method: 'GET' }));
await refuses('path mismatch', good, /htp/, opts({ path: '/v1/chat/completions' }));
await refuses('path mismatch, prefix', good, /htp/, opts({ path: '/v1/responses/extra' }));
await refuses('path mismatch, other query-stripped path', good, /htp/, opts({ path: '/v1/responsesX?stream=true' }));
await refuses('string-typed exp', mint({ payload: claims({ exp: String(NOW + 60) }) }), /exp .*not an integer/);
await refuses('string-typed iat', mint({ payload: claims({ iat: String(NOW) }) }), /iat .*not an integer/);
await refuses('missing exp', mint({ payload: claims({ exp: undefined }) }), /exp/);
await refuses('oversized token', mint({ payload: claims({ pad: 'x'.repeat(17 * 1024) }) }), /too large/);
await refuses('two segments', good.split('.').slice(0, 2).join('.'), /segments/);
await refuses('four segments', `${good}.x`, /segments/);
await refuses('bad base64url in payload', good.replace('.', '.+'), /base64url/);
await refuses('padded base64url signature', `${good}==`, /base64url/);
await refuses('payload not JSON (validly signed)', mint({ payload: 'not json' }), /payload is not JSON/);
{
  // Same signature bytes, another spelling (the unused low bits of the last character set):
  // a lenient decoder would accept it, making tokens malleable.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(good.at(-1));
  const respelled = good.slice(0, -1) + alphabet[last ^ 1];
  report(Buffer.from(respelled.split('.')[2], 'base64url').equals(Buffer.from(good.split('.')[2], 'base64url')), 'respelled signature decodes to the same bytes');
  await refuses('non-canonical base64url signature', respelled, /canonical/);
}
await refuses('no audience configured', good, /audience/, opts({ audience: undefined }));
await refuses('not a string', undefined, /no assertion/);

// --- loadJwks over HTTP and from a file ---
const server = http.createServer((req, res) => {
  if (req.url === '/.well-known/scopegate/jwks.json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(jwks));
  } else {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const jwksUrl = `http://127.0.0.1:${server.address().port}/.well-known/scopegate/jwks.json`;
try {
  const fetched = await loadJwks(jwksUrl);
  report(fetched.keys.length === 2, 'loadJwks over HTTP', `${fetched.keys.length} keys`);
  await accepts('valid ES256 with the fetched JWKS', mint({ alg: 'ES256' }), opts({ jwks: fetched }));
} catch (e) {
  report(false, 'loadJwks over HTTP', e.message);
}
try {
  await loadJwks(jwksUrl.replace('jwks.json', 'missing.json'));
  report(false, 'loadJwks refuses an HTTP 404', 'accepted');
} catch (e) {
  report(/404/.test(e.message), 'loadJwks refuses an HTTP 404', e.message);
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'scopegate-selftest-'));
const jwksFile = path.join(tmp, 'jwks.json');
fs.writeFileSync(jwksFile, JSON.stringify(jwks));
report((await loadJwks(jwksFile)).keys.length === 2, 'loadJwks from a file');

// --- CLI as a child process ---
function cli(args, env = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(here, 'verify.mjs'), ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }),
    );
  });
}
const base = ['--audience', AUD, '--method', 'POST', '--path', '/v1/responses'];
{
  const r = await cli(['--jwks', jwksUrl, ...base, good]);
  let sub;
  try {
    sub = JSON.parse(r.stdout).sub;
  } catch {}
  report(r.code === 0 && sub === 'dev', 'CLI accepts a valid assertion (JWKS URL), exit 0', `exit ${r.code} ${r.stderr.trim()}`);
}
{
  const r = await cli(['--jwks', jwksFile, ...base.slice(0, 4), '--path', '/v1/chat/completions', good]);
  report(r.code === 1 && /^invalid assertion: .*htp/.test(r.stderr) && r.stdout === '', 'CLI refuses a path mismatch, exit 1', `exit ${r.code} ${r.stderr.trim()}`);
}
{
  const r = await cli(['--jwks', jwksFile, '--hmac-secret-env', 'SG_SELFTEST_SECRET', ...base, mint({ alg: 'HS256' })], {
    SG_SELFTEST_SECRET: `${hmacSecret}\n`,
  });
  report(r.code === 0, 'CLI accepts HS256 with --hmac-secret-env', `exit ${r.code} ${r.stderr.trim()}`);
}

server.close();
fs.rmSync(tmp, { recursive: true, force: true });
console.log(failures ? `${failures} case(s) FAILED` : 'all cases passed');
process.exitCode = failures ? 1 : 0;
