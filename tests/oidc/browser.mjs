// Drives Debian's Chromium over the DevTools protocol (puppeteer-core, which downloads no browser):
// opens scopegate's URL, signs in on the provider's form, lands on the real Control UI, and waits for
// the UI's own WebSocket to answer `users.self` (the gateway's profile of the signed-in person).
//
// Usage: node browser.mjs '{"url","login","password","expect","screenshot","chromium","profileDir"}'
// Prints one line `result {...}`: what the browser saw (URLs, frames, cookies), for the test to check.
import puppeteer from 'puppeteer-core';

const opts = JSON.parse(process.argv[2]);
const origin = new URL(opts.url).origin;
const result = { steps: [], frames: [], websockets: [] };
const step = (what, url) => result.steps.push({ what, url });

const within = (ms, what, promise) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)),
  ]);

const browser = await puppeteer.launch({
  executablePath: opts.chromium,
  headless: true,
  userDataDir: opts.profileDir,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--no-first-run',
    '--host-resolver-rules=MAP localhost 127.0.0.1',
  ],
});
let failure = null;
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 860 });
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  let resolveProfile;
  const profile = new Promise((r) => { resolveProfile = r; });
  cdp.on('Network.webSocketCreated', (e) => result.websockets.push({ url: e.url }));
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) =>
    result.websockets.push({ status: e.response.status }));
  cdp.on('Network.webSocketClosed', () => result.websockets.push({ closed: true }));
  cdp.on('Network.webSocketFrameReceived', (e) => {
    const data = e.response.payloadData;
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (frame.type === 'res') {
      const keep = { id: frame.id, ok: frame.ok, kind: frame.payload && frame.payload.type, error: frame.error };
      if (frame.payload && frame.payload.type === 'hello-ok') keep.scopes = frame.payload.auth && frame.payload.auth.scopes;
      if (frame.payload && frame.payload.profile) {
        keep.profile = frame.payload.profile;
        resolveProfile(frame.payload.profile);
      }
      result.frames.push(keep);
    }
  });

  await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
  step('opened', page.url());
  await within(30000, 'the provider sign-in form', page.waitForSelector('#login'));
  step('provider form', page.url());
  await page.type('#login', opts.login);
  await page.type('#password', opts.password);
  await Promise.all([
    page.waitForNavigation({ waitUntil: 'domcontentloaded', timeout: 30000 }),
    page.click('#submit'),
  ]);
  await within(30000, 'back on scopegate', page.waitForFunction((o) => location.origin === o, {}, origin));
  step('landed', page.url());
  result.profile = await within(60000, 'users.self over the Control UI WebSocket', profile);
  // Let the page finish rendering what it just received before the picture is taken.
  await page.waitForNetworkIdle({ idleTime: 500, timeout: 15000 }).catch(() => {});
  await page.screenshot({ path: opts.screenshot });
  step('screenshot', opts.screenshot);
  result.cookies = (await page.cookies()).map((c) => ({
    name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure, path: c.path,
  }));
  result.title = await page.title();
} catch (err) {
  failure = String(err && err.stack || err);
} finally {
  await browser.close();
}
result.failure = failure;
console.log(`result ${JSON.stringify(result)}`);
