// Verifies a scopegate assertion (the `x-scopegate-assertion` header) with nothing but Node's own
// crypto: no npm packages, Node 20+.
//
// Library:  import { verifyAssertion, loadJwks } from './verify.mjs';
// CLI:      node verify.mjs --jwks URL|FILE [--hmac-secret-env VAR | --hmac-secret-file FILE]
//                           --audience A [--issuer I] [--method M --path P] TOKEN
//           prints the verified claims as JSON (exit 0), or `invalid assertion: <reason>` on stderr (exit 1).
//
// The checks follow RFC 8725 (JWT best current practices): the algorithm is pinned by the key, never
// chosen by the token; the token's `typ` is explicit so no other kind of JWT can stand in for it;
// `htm`/`htp` bind the assertion to one request, so it cannot be replayed on another method or path.

import crypto from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const ASSERTION_TYP = 'scopegate-assertion+jwt';
export const MAX_TOKEN_LENGTH = 16 * 1024;

// A published key verifies exactly one algorithm, and only if its family fits that algorithm.
const KEY_FAMILY = {
  EdDSA: { kty: 'OKP', crv: 'Ed25519', sigLength: 64 },
  ES256: { kty: 'EC', crv: 'P-256', sigLength: 64 }, // JWS uses raw r||s, not DER
};
const HMAC_MIN_SECRET = 32; // scopegate itself refuses shorter HS256 secrets

/** Thrown for every refusal; `code` lets callers react to an unknown kid (key rotation). */
export class AssertionError extends Error {
  constructor(message, code = 'ERR_ASSERTION_INVALID') {
    super(message);
    this.name = 'AssertionError';
    this.code = code;
  }
}

function fail(message, code) {
  throw new AssertionError(message, code);
}

// Strict base64url: no padding, no foreign characters, and canonical (no stray trailing bits), so a
// token has exactly one spelling and nothing is silently skipped by a lenient decoder.
function b64urlDecode(segment, what) {
  if (!/^[A-Za-z0-9_-]*$/.test(segment) || segment.length % 4 === 1) fail(`${what} is not base64url`);
  const bytes = Buffer.from(segment, 'base64url');
  if (bytes.toString('base64url') !== segment) fail(`${what} is not canonical base64url`);
  return bytes;
}

function jsonObject(bytes, what) {
  let value;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    fail(`${what} is not JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(`${what} is not a JSON object`);
  return value;
}

function intClaim(claims, name) {
  const v = claims[name];
  // A string "9999999999" must not pass: loose comparisons would turn it into a far-future date.
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(`claim ${name} is missing or not an integer`);
  return v;
}

function findKey(jwks, kid) {
  if (!jwks || !Array.isArray(jwks.keys)) fail('no JWKS (an object with a keys array) to verify with');
  const matches = jwks.keys.filter((k) => k && k.kid === kid);
  // Two keys under one kid would make the choice of key ambiguous; refuse rather than guess.
  if (matches.length > 1) fail(`JWKS has ${matches.length} keys with kid ${JSON.stringify(kid)}`);
  return matches[0];
}

function verifySignature(alg, kid, jwk, signingInput, signature) {
  const family = KEY_FAMILY[alg];
  if (jwk.kty !== family.kty || jwk.crv !== family.crv) {
    fail(`key ${JSON.stringify(kid)} is ${jwk.kty}/${jwk.crv}, which cannot verify ${alg}`);
  }
  if (jwk.use !== undefined && jwk.use !== 'sig') fail(`key ${JSON.stringify(kid)} is not a signing key`);
  let key;
  try {
    // Only the public members: a stray `d` must not turn this into a private key import.
    const { kty, crv, x, y } = jwk;
    key = crypto.createPublicKey({ key: { kty, crv, x, y }, format: 'jwk' });
  } catch (e) {
    fail(`published key ${JSON.stringify(kid)} is malformed: ${e.message}`);
  }
  if (signature.length !== family.sigLength) fail(`signature verification failed (wrong length for ${alg})`);
  const ok =
    alg === 'EdDSA'
      ? crypto.verify(null, signingInput, key, signature)
      : crypto.verify('sha256', signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
  if (!ok) fail('signature verification failed');
}

function verifyHmac(secret, signingInput, signature) {
  if (secret === undefined || secret === null || secret === '') fail('HS256 assertion but no shared secret configured');
  const secretBytes = Buffer.from(secret);
  if (secretBytes.length < HMAC_MIN_SECRET) fail(`HS256 shared secret is ${secretBytes.length} bytes; at least ${HMAC_MIN_SECRET} are required`);
  const expected = crypto.createHmac('sha256', secretBytes).update(signingInput).digest();
  // timingSafeEqual throws on a length mismatch, and the expected length is public anyway.
  if (signature.length !== expected.length || !crypto.timingSafeEqual(signature, expected)) {
    fail('signature verification failed');
  }
}

/**
 * Verifies a scopegate assertion and returns its claims, or throws an AssertionError saying why not.
 *
 * @param {string} token the compact JWS from the `x-scopegate-assertion` header
 * @param {object} opts
 * @param {{keys: object[]}} [opts.jwks] scopegate's JWKS (see loadJwks); needed for EdDSA/ES256
 * @param {string|Buffer} [opts.hmacSecret] the shared secret, for HS256 only
 * @param {string} opts.audience the `aud` this upstream expects
 * @param {string} [opts.issuer='scopegate']
 * @param {string} [opts.method] the request's method; when given, `htm` must match it
 * @param {string} [opts.path] the request's path; when given, `htp` must equal it (a `?query` is ignored)
 * @param {number} [opts.now] seconds since the epoch
 * @param {number} [opts.leeway=5] clock skew tolerated, in seconds
 */
export async function verifyAssertion(
  token,
  { jwks, hmacSecret, audience, issuer = 'scopegate', method, path, now = Date.now() / 1000, leeway = 5 } = {},
) {
  // Caller mistakes would otherwise silently weaken a check, so they fail loudly.
  if (typeof audience !== 'string' || audience === '') fail('no audience to check the assertion against');
  if (typeof issuer !== 'string' || issuer === '') fail('no issuer to check the assertion against');
  if (!Number.isFinite(now) || !Number.isFinite(leeway) || leeway < 0) fail('now and leeway must be finite numbers');

  if (typeof token !== 'string' || token === '') fail('no assertion');
  // Bound the work an unauthenticated sender can cause before any signature check.
  if (token.length > MAX_TOKEN_LENGTH) fail(`assertion is too large (${token.length} > ${MAX_TOKEN_LENGTH} bytes)`);
  const segments = token.split('.');
  if (segments.length !== 3) fail(`not a compact JWS: ${segments.length} segments instead of 3`);
  const [headerB64, payloadB64, signatureB64] = segments;
  const header = jsonObject(b64urlDecode(headerB64, 'header'), 'header');
  const payloadBytes = b64urlDecode(payloadB64, 'payload');
  const signature = b64urlDecode(signatureB64, 'signature');
  const signingInput = Buffer.from(`${headerB64}.${payloadB64}`, 'ascii');

  if (header.typ !== ASSERTION_TYP) fail(`typ is ${JSON.stringify(header.typ)}, not ${ASSERTION_TYP}`);
  // We understand no header extensions, and RFC 7515 says an unknown critical one must be refused.
  if (header.crit !== undefined) fail('crit header parameters are not supported');
  const { alg, kid } = header;
  if (alg !== 'EdDSA' && alg !== 'ES256' && alg !== 'HS256') fail(`alg ${JSON.stringify(alg)} is not accepted`);
  if (typeof kid !== 'string' || kid === '') fail('no kid in the header');

  if (alg === 'HS256') {
    // A kid that names a published public key must never be verified as HMAC: that is the classic
    // confusion where the public key (known to everyone) is used as the HMAC secret.
    const published = jwks && Array.isArray(jwks.keys) ? findKey(jwks, kid) : undefined;
    if (published) fail(`alg HS256 does not match the key's pinned ${published.alg} (kid ${JSON.stringify(kid)})`);
    verifyHmac(hmacSecret, signingInput, signature);
  } else {
    const jwk = findKey(jwks, kid);
    if (!jwk) fail(`no published key has kid ${JSON.stringify(kid)}`, 'ERR_ASSERTION_UNKNOWN_KID');
    if (jwk.alg !== alg) fail(`alg ${alg} does not match the key's pinned ${JSON.stringify(jwk.alg)} (kid ${JSON.stringify(kid)})`);
    verifySignature(alg, kid, jwk, signingInput, signature);
  }

  // Only now, with the signature good, is anything in the payload worth reading.
  const claims = jsonObject(payloadBytes, 'payload');
  const exp = intClaim(claims, 'exp');
  const iat = intClaim(claims, 'iat');
  if (!(exp > now - leeway)) fail(`assertion expired ${Math.floor(now - exp)} s ago`);
  if (iat > now + leeway) fail(`assertion iat is ${Math.ceil(iat - now)} s in the future`);
  if (claims.iss !== issuer) fail(`iss is ${JSON.stringify(claims.iss)}, not ${JSON.stringify(issuer)}`);
  const aud = claims.aud;
  const audOk = Array.isArray(aud) ? aud.includes(audience) : aud === audience;
  if (!audOk) fail(`aud ${JSON.stringify(aud)} does not include ${JSON.stringify(audience)}`);

  if (method !== undefined) {
    if (typeof claims.htm !== 'string' || claims.htm.toUpperCase() !== String(method).toUpperCase()) {
      fail(`assertion is bound to method (htm) ${JSON.stringify(claims.htm)}, not ${method}`);
    }
  }
  if (path !== undefined) {
    // scopegate binds the path without its query; callers often hold the raw request target.
    const bare = String(path).split('?', 1)[0];
    if (claims.htp !== bare) fail(`assertion is bound to path (htp) ${JSON.stringify(claims.htp)}, not ${bare}`);
  }
  return claims;
}

/** Loads a JWKS from an http(s) URL (scopegate serves it at /.well-known/scopegate/jwks.json) or a file. */
export async function loadJwks(source) {
  let text;
  if (/^https?:\/\//i.test(source)) {
    // A hung proxy must not hang the upstream's startup or refresh forever.
    const res = await fetch(source, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new Error(`JWKS fetch from ${source} failed: HTTP ${res.status}`);
    text = await res.text();
  } else {
    text = fs.readFileSync(source.startsWith('file:') ? fileURLToPath(source) : source, 'utf8');
  }
  let jwks;
  try {
    jwks = JSON.parse(text);
  } catch {
    throw new Error(`JWKS from ${source} is not JSON`);
  }
  if (!jwks || !Array.isArray(jwks.keys)) throw new Error(`JWKS from ${source} has no keys array`);
  return jwks;
}

const USAGE =
  'usage: node verify.mjs --jwks URL|FILE [--hmac-secret-env VAR | --hmac-secret-file FILE] ' +
  '--audience A [--issuer I] [--method M --path P] TOKEN';

// Like scopegate, ignore the trailing newline a file or `echo` leaves on a secret.
const chompSecret = (s) => s.replace(/[\r\n]+$/, '');

async function main(argv) {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        jwks: { type: 'string' },
        'hmac-secret-env': { type: 'string' },
        'hmac-secret-file': { type: 'string' },
        audience: { type: 'string' },
        issuer: { type: 'string' },
        method: { type: 'string' },
        path: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`${e.message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1 || !values.audience || (!values.jwks && !values['hmac-secret-env'] && !values['hmac-secret-file'])) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  try {
    let hmacSecret;
    if (values['hmac-secret-env']) {
      const v = process.env[values['hmac-secret-env']];
      if (v === undefined) throw new Error(`environment variable ${values['hmac-secret-env']} is not set`);
      hmacSecret = chompSecret(v);
    } else if (values['hmac-secret-file']) {
      hmacSecret = chompSecret(fs.readFileSync(values['hmac-secret-file'], 'utf8'));
    }
    const claims = await verifyAssertion(positionals[0], {
      jwks: values.jwks ? await loadJwks(values.jwks) : undefined,
      hmacSecret,
      audience: values.audience,
      issuer: values.issuer ?? 'scopegate',
      method: values.method,
      path: values.path,
    });
    process.stdout.write(`${JSON.stringify(claims, null, 2)}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`invalid assertion: ${e.message}\n`);
    return 1;
  }
}

// Run the CLI only when executed directly, not when imported (realpath: it may be run via a symlink).
function invokedDirectly() {
  try {
    return import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href;
  } catch {
    return false; // no script path (REPL, -e): we were imported
  }
}
if (invokedDirectly()) {
  process.exitCode = await main(process.argv.slice(2));
}
