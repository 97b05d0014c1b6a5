// Browser scenarios of issue 6, in Debian's headless Chromium driven by
// playwright-core, against the real stack: run.sh starts it (deploy/run.sh
// in a temporary run dir) or, with --demo, points at a running `make run`.
// This file gets its address and credentials from the environment:
//   PPM_GATEWAY_URL, PPM_ADMIN_KEY, PPM_DEMO_PAYEE_ID, PPM_DEMO_TENANT
//   (run/demo.env), PPM_PPMCTL (mints the user tokens: the tenant's secret
//   stays in config), PPM_SCREENSHOTS_DIR (optional: also write the
//   README's pictures there). The payer scenario needs a time scale
//   (PPM_TIME_SCALE of the stack) and the settings run.sh gives the tenant.
//   PPM_SCENARIOS (a regular expression) runs only the matching scenarios.
//   PPM_BROWSER_DEMO=1 (run.sh --demo) leaves out the scenario that rotates
//   the tenant's user-token secret, which would void run/demo.env's tokens.
// Prints one line per scenario and the closing "N passed, N failed".
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const base = process.env.PPM_GATEWAY_URL;
const adminKey = process.env.PPM_ADMIN_KEY;
const payee = process.env.PPM_DEMO_PAYEE_ID || 'u_coach';
const tenant = process.env.PPM_DEMO_TENANT;
const shots = process.env.PPM_SCREENSHOTS_DIR || '';

function token(sub) {
  return execFileSync(process.env.PPM_PPMCTL, ['user-token', '--tenant', tenant, '--user', sub]).toString().trim();
}
function expect(cond, what) {
  if (!cond) throw new Error('expected: ' + what);
}
async function shot(page, name) {
  if (shots) await page.screenshot({ path: path.join(shots, name + '.png') });
}
const seconds = (mmss) => {
  const [m, s] = mmss.split(':').map(Number);
  return m * 60 + s;
};

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('admin sets rates and presets, and sees a field error', async (page) => {
  await page.goto(base + '/admin.html#key=' + encodeURIComponent(adminKey));
  await page.getByRole('tab', { name: 'Monetize' }).click();
  await page.getByLabel('Default amount per minute – Text Chat').fill('1.00');
  await page.getByLabel('Default amount per minute – Calling').fill('2.50');
  await page.getByLabel(/Preset minutes/).fill('10, 30, 45');
  await page.getByRole('button', { name: 'Save settings' }).click();
  await page.getByText(/^Saved \(version \d+\)\.$/).waitFor();
  expect(await page.locator('#webhook-url').textContent() === base + '/v1/stripe/webhook/' + tenant, 'the webhook URL of the tenant');
  expect((await page.getByLabel('Stripe secret key').inputValue()).includes('…'), 'the secret key is masked');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'admin-settings');
  // a preset out of range: the API's field error appears under the field
  await page.getByLabel(/Preset minutes/).fill('10, 700');
  await page.getByRole('button', { name: 'Save settings' }).click();
  const err = page.locator('#err-preset_minutes');
  await err.filter({ hasText: /600/ }).waitFor();
  expect(await page.getByLabel(/Preset minutes/).getAttribute('aria-invalid') === 'true', 'the field is marked invalid');
  await page.getByLabel(/Preset minutes/).fill('10, 30, 45');
  await page.getByRole('button', { name: 'Save settings' }).click();
  await page.getByText(/^Saved/).waitFor();
  // individual rates through the Users tab's Edit popup (blank = free)
  await page.getByRole('tab', { name: 'Users' }).click();
  await page.getByLabel('User id').fill(payee);
  await page.getByRole('button', { name: 'Edit rates', exact: true }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('Amount per minute – Calling').fill('3.00');
  await dialog.getByLabel('Amount per minute – Text Chat').fill('1.00');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await page.getByText('Rates of ' + payee + ' saved.').waitFor();
  await page.getByRole('cell', { name: '3.00 USD' }).first().waitFor();
  // an amount that is not one is refused in the popup, named
  await page.getByRole('button', { name: 'Edit rates of ' + payee }).click();
  await dialog.getByLabel('Amount per minute – Calling').fill('abc');
  await dialog.getByRole('button', { name: 'Save' }).click();
  await page.locator('#err-rates-call_per_minute').filter({ hasText: /amount/ }).waitFor();
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await page.getByRole('tab', { name: 'Audit log' }).click();
  await page.getByRole('cell', { name: /default_chat_per_minute$/ }).first().waitFor();
});

async function openWidget(page, who) {
  await page.goto(base + '/widget.html#token=' + token(who) + '&payee=' + encodeURIComponent(payee));
  await page.getByRole('button', { name: 'Start chat' }).click();
  await page.getByRole('heading', { name: 'This conversation is paid' }).waitFor();
}

scenario('payer pays with the test card, counts down, is warned, tops up, time is up', async (page) => {
  await openWidget(page, 'u_payer_1');
  expect((await page.locator('#prompt-rate').textContent()) === '1.00 USD', 'the prompt shows the rate');
  await shot(page, 'payment-prompt');
  await page.getByRole('button', { name: 'Choose minutes' }).click();
  const popup = page.getByRole('dialog');
  await popup.getByRole('button', { name: /30 min/ }).waitFor();
  expect((await popup.getByRole('button', { name: /10 min/ }).textContent()).includes('10.00 USD'), 'preset 10 shows its total');
  expect((await popup.getByRole('button', { name: /45 min/ }).textContent()).includes('45.00 USD'), 'preset 45 shows its total');
  await popup.getByRole('button', { name: /30 min/ }).click();
  expect(await popup.locator('#total').textContent() === '30.00 USD', 'the total of 30 minutes');
  const pay = popup.getByRole('button', { name: 'Pay' });
  expect(await pay.isDisabled(), 'Pay is disabled before the terms are ticked');
  expect(await popup.getByRole('link', { name: 'terms and conditions' }).getAttribute('href') === 'https://example.com/terms', 'the terms link');
  await popup.getByLabel(/I accept the/).check();
  await shot(page, 'payment-popup');
  // custom minutes: 2 minutes keep the test short under PPM_TIME_SCALE
  await popup.getByLabel(/Custom minutes/).fill('2');
  expect(await popup.locator('#total').textContent() === '2.00 USD', 'the total of custom minutes');
  expect(!(await pay.isDisabled()), 'Pay is enabled once terms are ticked');
  await popup.getByLabel('Visa — succeeds').check();
  await pay.click();
  await page.getByRole('timer').waitFor();
  await page.locator('#state-badge').filter({ hasText: 'active' }).waitFor();
  // the widget's heartbeats must keep the session from pausing (B5's grace)
  await page.evaluate(() => {
    window.pausedSeen = false;
    setInterval(() => { if (!document.getElementById('paused-badge').hidden) window.pausedSeen = true; }, 100);
  });
  const t0 = seconds(await page.getByRole('timer').textContent());
  await shot(page, 'active-session');
  await page.waitForTimeout(1300);
  const t1 = seconds(await page.getByRole('timer').textContent());
  expect(t1 < t0, `the countdown decreases (${t0} → ${t1})`);
  await page.locator('#warning').getByText(/left/).waitFor({ timeout: 15000 });
  // top up without interruption
  await page.getByRole('button', { name: /Add time|Buy more minutes/ }).click();
  await popup.getByLabel(/Custom minutes/).fill('1');
  await popup.getByLabel(/I accept the/).check();
  const before = seconds(await page.getByRole('timer').textContent());
  await popup.getByRole('button', { name: 'Pay' }).click();
  await popup.waitFor({ state: 'hidden' });
  await page.waitForFunction((b) => {
    const t = document.querySelector('#countdown').textContent.split(':').map(Number);
    return t[0] * 60 + t[1] > b;
  }, before, { timeout: 5000 });
  // the paid time runs out
  await page.getByText('Time is up.').waitFor({ timeout: 30000 });
  expect(!(await page.evaluate(() => window.pausedSeen)), 'the session never paused while the widget sent heartbeats');
  expect(await page.getByRole('button', { name: 'Buy more minutes' }).isVisible(), 'buy more is offered');
});

scenario('a declined card shows its reason and allows a retry', async (page) => {
  await openWidget(page, 'u_payer_2');
  await page.getByRole('button', { name: 'Choose minutes' }).click();
  const popup = page.getByRole('dialog');
  await popup.getByRole('button', { name: /10 min/ }).click();
  await popup.getByLabel(/I accept the/).check();
  await popup.getByLabel('Declined — insufficient funds').check();
  await popup.getByRole('button', { name: 'Pay' }).click();
  await popup.locator('#pay-error').getByText(/insufficient funds/).waitFor();
  await popup.locator('#pay-error').getByText(/Try another card/).waitFor();
  expect(!(await popup.getByRole('button', { name: 'Pay' }).isDisabled()), 'Pay can be tried again');
  await popup.getByLabel('Declined', { exact: true }).check();
  await popup.getByRole('button', { name: 'Pay' }).click();
  await popup.locator('#pay-error').getByText(/generic_decline/).waitFor();
  await popup.getByLabel('Visa — succeeds').check();
  await popup.getByRole('button', { name: 'Pay' }).click();
  await page.locator('#state-badge').filter({ hasText: 'active' }).waitFor();
});

scenario('operations page shows sessions, revenue and health', async (page) => {
  await page.goto(base + '/ops.html#key=' + encodeURIComponent(adminKey));
  await page.locator('#health').getByText('metering: up').waitFor();
  await page.locator('#revenue').getByText('USD').first().waitFor();
  expect(Number(await page.locator('#active-count').textContent()) >= 1, 'the paid session is active');
  expect(/^\d+$/.test(await page.locator('#failures').textContent()), 'failures are counted');
});

scenario('pages work by keyboard at phone width', async (page) => {
  await page.setViewportSize({ width: 375, height: 740 });
  await page.goto(base + '/admin.html');
  for (let i = 0; i < 5 && (await page.evaluate(() => document.activeElement.id)) !== 'admin-key'; i++) {
    await page.keyboard.press('Tab');
  }
  expect(await page.evaluate(() => document.activeElement.id) === 'admin-key', 'Tab reaches the admin key field');
  await page.keyboard.type(adminKey);
  await page.keyboard.press('Enter');
  await page.getByRole('tab', { name: 'Features' }).waitFor();
  await page.keyboard.press('ArrowRight');
  await page.getByRole('heading', { name: /Monetize/ }).waitFor();
  const wide = await page.evaluate(() => {
    const out = [];
    for (const e of document.querySelectorAll('body *')) {
      const r = e.getBoundingClientRect();
      if (r.width && r.right > window.innerWidth + 1) out.push(e.tagName + '#' + e.id + '.' + e.className);
    }
    return out.slice(0, 5);
  });
  expect(wide.length === 0, 'nothing wider than 375 px: ' + wide.join(', '));
});

/* A user token signed with secret, as a platform's backend would make it. */
function hs256(secret, sub) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = part({ alg: 'HS256', typ: 'JWT' }) + '.' +
    part({ tid: tenant, sub, roles: [], exp: Math.floor(Date.now() / 1000) + 600 });
  return body + '.' + crypto.createHmac('sha256', secret).update(body).digest('base64url');
}
async function userStatus(userToken) {
  const res = await fetch(base + '/v1/quote?payee=' + encodeURIComponent(payee) + '&kind=chat',
    { headers: { Authorization: 'Bearer ' + userToken } });
  return res.status;
}

if (process.env.PPM_BROWSER_DEMO !== '1') {
  scenario('admin rotates the user-token secret and sees the new one once', async (page) => {
    const before = token('u_rotation');
    expect(await userStatus(before) === 200, 'a token of the current secret works');
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    await page.goto(base + '/admin.html#key=' + encodeURIComponent(adminKey));
    await page.getByRole('tab', { name: 'User tokens' }).click();
    await page.getByText(/signed with HS256/).waitFor();
    expect(await page.locator('#tokens-tenant').textContent() === tenant, 'the tid to put in tokens');
    const mask = page.locator('#token-secret-mask');
    await mask.filter({ hasText: /^…[0-9a-f]{4}$/ }).waitFor();
    const oldMask = await mask.textContent();
    expect((await page.locator('#token-secret-rotated').textContent()) !== '', 'when it was made');
    // the confirmation warns; Cancel (focused first) changes nothing
    await page.getByRole('button', { name: 'Rotate secret' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText(/stops working at once/).waitFor();
    expect(await page.evaluate(() => document.activeElement.id) === 'rotate-cancel', 'Cancel has the focus');
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'hidden' });
    expect(await userStatus(before) === 200, 'Cancel rotates nothing');
    // rotate: the new secret once, with a copy button
    await page.getByRole('button', { name: 'Rotate secret' }).click();
    await dialog.getByRole('button', { name: 'Rotate now' }).click();
    const field = dialog.getByLabel('New signing secret');
    await field.waitFor();
    const secret = await field.inputValue();
    expect(/^[0-9a-f]{64}$/.test(secret), 'the new secret is shown: ' + secret);
    await dialog.getByText(/not shown again/).waitFor();
    await dialog.getByRole('button', { name: 'Copy' }).click();
    await dialog.getByText('Copied.').waitFor();
    expect(await page.evaluate(() => navigator.clipboard.readText()) === secret, 'Copy puts it on the clipboard');
    expect(await userStatus(before) === 401, 'a token of the old secret is refused at once');
    expect(await userStatus(hs256(secret, 'u_rotation')) === 200, 'a token signed with the new secret works');
    await dialog.getByRole('button', { name: 'Done' }).click();
    await dialog.waitFor({ state: 'hidden' });
    const forgotten = await page.waitForFunction(() => document.getElementById('rotate-secret').value === '',
      null, { timeout: 2000 }).then(() => true, () => false);
    expect(forgotten, 'the page forgets the secret once the dialog is closed');
    expect(await mask.textContent() === '…' + secret.slice(-4) && oldMask !== '…' + secret.slice(-4), 'the new mask');
    // after a reload only the mask is there; the audit log has the rotation, masked
    await page.reload();
    await page.getByRole('tab', { name: 'User tokens' }).click();
    await mask.filter({ hasText: '…' + secret.slice(-4) }).waitFor();
    await page.getByRole('tab', { name: 'Audit log' }).click();
    await page.getByRole('cell', { name: 'user_token_secret' }).first().waitFor();
    expect(!(await page.content()).includes(secret), 'no page shows the secret again');
    expect(await userStatus(token('u_rotation')) === 200, 'ppmctl mints with the new secret');
  });
}

// playwright-core gives every launch a fresh, empty --user-data-dir of its own.
const browser = await chromium.launch({
  executablePath: process.env.PPM_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let passed = 0;
let failed = 0;
const only = process.env.PPM_SCENARIOS ? new RegExp(process.env.PPM_SCENARIOS) : null;
for (const s of scenarios.filter((x) => !only || only.test(x.name))) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 820 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const t0 = Date.now();
  const took = () => ' (' + ((Date.now() - t0) / 1000).toFixed(1) + ' s)';
  try {
    await s.fn(page);
    if (errors.length) throw new Error('script errors: ' + errors.join('; '));
    passed++;
    console.log('ok   ' + s.name + took());
  } catch (e) {
    failed++;
    console.log('FAIL ' + s.name + took() + ': ' + (e && e.message ? e.message.split('\n')[0] : e));
    if (shots === '') await page.screenshot({ path: path.join(os.tmpdir(), 'ppm-fail-' + passed + failed + '.png') }).catch(() => {});
  }
  await context.close();
}
await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
