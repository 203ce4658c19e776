// Verifies a scopegate assertion (the `x-scopegate-assertion` header) with nothing but Node's own crypto.
//
// Library:  import { verifyAssertion, loadJwks } from './verify.mjs'
// CLI:      node verify.mjs --jwks URL|FILE [--hmac-secret-env VAR] --audience A [--issuer I]
//                           [--method M --path P] TOKEN
//           prints the claims as JSON and exits 0, or prints "invalid assertion: <reason>" and exits 1.
//
// What is checked, and why (RFC 8725):
// - the key is chosen by `kid` from the JWKS, and the token's `alg` must equal the algorithm that key is
//   pinned to: the algorithm never comes from the token alone, so `none` and algorithm confusion fail;
// - `typ` must be `scopegate-assertion+jwt`, so no other kind of JWT can stand in for it;
// - `iss`, `aud`, `exp` and `iat` with a small leeway: assertions live for about a minute;
// - `htm` and `htp` bind the assertion to one method and one exact path: replaying it on another
//   request fails.

import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { pathToFileURL } from 'node:url';

export const ASSERTION_TYP = 'scopegate-assertion+jwt';
const MAX_TOKEN = 16 * 1024;

function fail(reason) {
  throw new Error(reason);
}

function b64urlDecode(part, what) {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) fail(`${what} is not base64url`);
  return Buffer.from(part, 'base64url');
}

function parseJson(buf, what) {
  try {
    const v = JSON.parse(buf.toString('utf8'));
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(`${what} is not a JSON object`);
    return v;
  } catch (e) {
    if (e.message.startsWith(what)) throw e;
    fail(`${what} is not JSON`);
  }
}

/** Loads a JWKS from an http(s) URL or a file path. */
export async function loadJwks(source) {
  let text;
  if (/^https?:\/\//.test(source)) {
    const res = await fetch(source, { headers: { accept: 'application/json' } });
    if (!res.ok) fail(`JWKS fetch failed with status ${res.status}`);
    text = await res.text();
  } else {
    text = await fs.readFile(source, 'utf8');
  }
  const jwks = JSON.parse(text);
  if (!Array.isArray(jwks.keys)) fail('JWKS has no keys array');
  return jwks;
}

/** The key family each algorithm requires: a key pinned to one algorithm only verifies that one. */
function keyFits(jwk, alg) {
  if (alg === 'EdDSA') return jwk.kty === 'OKP' && jwk.crv === 'Ed25519';
  if (alg === 'ES256') return jwk.kty === 'EC' && jwk.crv === 'P-256';
  return false;
}

function numericClaim(claims, name) {
  const v = claims[name];
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`claim ${name} is missing or not a number`);
  return v;
}

/**
 * Verifies `token` and returns its claims, or throws with the reason.
 * @param {string} token
 * @param {{jwks?: {keys: object[]}, hmacSecret?: string|Buffer, audience: string, issuer?: string,
 *          method?: string, path?: string, now?: number, leeway?: number}} opts
 */
export async function verifyAssertion(token, opts) {
  const { jwks, hmacSecret, audience, issuer = 'scopegate', method, path, now = Date.now() / 1000, leeway = 5 } = opts;
  if (typeof token !== 'string' || token.length === 0) fail('no assertion');
  if (token.length > MAX_TOKEN) fail('assertion is too large');
  const parts = token.split('.');
  if (parts.length !== 3) fail('not a compact JWS (three segments)');
  const header = parseJson(b64urlDecode(parts[0], 'header'), 'header');
  const payloadBytes = b64urlDecode(parts[1], 'payload');
  const signature = b64urlDecode(parts[2], 'signature');
  const signingInput = Buffer.from(`${parts[0]}.${parts[1]}`, 'ascii');

  if (header.typ !== ASSERTION_TYP) fail(`typ is not ${ASSERTION_TYP}`);
  const alg = header.alg;
  if (typeof alg !== 'string' || alg.toLowerCase() === 'none') fail('alg none is never accepted');

  if (alg === 'HS256') {
    if (!hmacSecret) fail('HS256 assertion but no shared secret configured');
    const expected = crypto.createHmac('sha256', hmacSecret).update(signingInput).digest();
    if (expected.length !== signature.length || !crypto.timingSafeEqual(expected, signature)) {
      fail('signature verification failed');
    }
  } else {
    if (!jwks) fail('no JWKS to verify with');
    if (typeof header.kid !== 'string') fail('no kid in the header');
    const jwk = jwks.keys.find((k) => k.kid === header.kid);
    if (!jwk) fail(`no published key has kid ${header.kid}`);
    if (jwk.alg !== alg) fail(`alg ${alg} does not match the key's pinned ${jwk.alg}`);
    if (!keyFits(jwk, alg)) fail(`key ${header.kid} cannot verify ${alg}`);
    const { kty, crv, x, y } = jwk;
    const key = crypto.createPublicKey({ key: { kty, crv, x, y }, format: 'jwk' });
    const ok =
      alg === 'EdDSA'
        ? crypto.verify(null, signingInput, key, signature)
        : crypto.verify('sha256', signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
    if (!ok) fail('signature verification failed');
  }

  const claims = parseJson(payloadBytes, 'payload');
  const exp = numericClaim(claims, 'exp');
  const iat = numericClaim(claims, 'iat');
  if (now > exp + leeway) fail(`assertion expired ${Math.floor(now - exp)} s ago`);
  if (iat > now + leeway) fail('assertion is issued in the future');
  if (claims.iss !== issuer) fail(`iss is not ${issuer}`);
  const aud = claims.aud;
  const audOk = Array.isArray(aud) ? aud.includes(audience) : aud === audience;
  if (!audOk) fail(`aud does not include ${audience}`);
  if (method !== undefined && String(claims.htm).toUpperCase() !== method.toUpperCase()) {
    fail(`assertion is bound to another method (htm), not ${method}`);
  }
  if (path !== undefined) {
    const p = path.split('?')[0];
    if (claims.htp !== p) fail(`assertion is bound to another path (htp), not ${p}`);
  }
  return claims;
}

function parseArgs(argv) {
  const opts = {};
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const v = argv[i + 1];
      if (v === undefined) fail(`${a} needs a value`);
      opts[a.slice(2)] = v;
      i++;
    } else rest.push(a);
  }
  return { opts, rest };
}

async function main() {
  try {
    const { opts, rest } = parseArgs(process.argv.slice(2));
    if (rest.length !== 1 || !opts.audience) {
      fail('usage: node verify.mjs --jwks URL|FILE [--hmac-secret-env VAR] --audience A [--issuer I] [--method M --path P] TOKEN');
    }
    const claims = await verifyAssertion(rest[0], {
      jwks: opts.jwks ? await loadJwks(opts.jwks) : undefined,
      hmacSecret: opts['hmac-secret-env'] ? process.env[opts['hmac-secret-env']] : undefined,
      audience: opts.audience,
      issuer: opts.issuer,
      method: opts.method,
      path: opts.path,
    });
    process.stdout.write(JSON.stringify(claims, null, 2) + '\n');
    process.exit(0);
  } catch (e) {
    process.stderr.write(`invalid assertion: ${e.message}\n`);
    process.exit(1);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await main();
}
