// A real OpenID provider for scopegate's tests: the npm package `oidc-provider` (pinned by the test
// suite), on a loopback port, with one small sign-in page of our own for the test people.
//
// Usage: node provider.mjs CONFIG.json
// CONFIG: { "port": 0, "clients": [ ...oidc-provider client metadata... ],
//           "people": [ { "login", "password", "name", "email", "groups" } ] }
// Prints one line `listening http://127.0.0.1:PORT` once it accepts connections (the test waits for it).
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const people = new Map(config.people.map((p) => [p.login, p]));

const server = http.createServer();
server.listen(config.port || 0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients,
    async findAccount(_ctx, id) {
      const p = people.get(id);
      if (!p) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: p.email, email_verified: true, name: p.name, groups: p.groups };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    // Scope-requested claims go into the ID token too (scopegate reads email, name, groups there).
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    // A refresh token whenever the client may use one (no offline_access consent dance in tests).
    async issueRefreshToken(_ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600, RefreshToken: 3600 },
    cookies: { keys: ['scopegate-test-provider-cookie-key'] },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  provider.on('server_error', (_ctx, err) => console.error('provider server_error', err));

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    const m = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
    if (!m) return callback(req, res);
    try {
      if (req.method === 'GET' && !m[2]) return page(res, m[1], '');
      if (req.method === 'POST' && m[2]) {
        const form = new URLSearchParams(await body(req));
        const p = people.get(form.get('login') || '');
        if (!p || p.password !== form.get('password')) {
          return page(res, m[1], 'Wrong login or password.', 401);
        }
        const details = await provider.interactionDetails(req, res);
        const grant = new provider.Grant({ accountId: p.login, clientId: details.params.client_id });
        grant.addOIDCScope(String(details.params.scope || 'openid'));
        const grantId = await grant.save();
        return provider.interactionFinished(
          req,
          res,
          { login: { accountId: p.login }, consent: { grantId } },
          { mergeWithLastSubmission: false },
        );
      }
      res.writeHead(405).end();
    } catch (err) {
      console.error('interaction failed', err);
      res.writeHead(400, { 'content-type': 'text/plain' }).end(String(err && err.message));
    }
  });
  console.log(`listening ${issuer}`);
});

function body(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { data += c; if (data.length > 65536) req.destroy(); });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

function page(res, uid, error, status = 200) {
  const esc = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>Test provider sign-in</title></head><body>
<h1>Sign in to the test provider</h1>
${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<label>Login <input id="login" name="login" autocomplete="username"></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="submit" type="submit">Sign in</button>
</form></body></html>`);
}
