/* ops.js: the operations page, refreshed every 5 seconds from the admin
   API: sessions, payments and each service's health. */
'use strict';
(() => {
  const { api, ApiError, money, params, el, mmss, when } = ppm;
  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem('ppm_admin_key') || params().key || '';
  let timer = null;

  async function refresh() {
    try {
      const [active, recent, payments, health] = await Promise.all([
        api('GET', '/v1/admin/sessions?state=active&limit=200', key),
        api('GET', '/v1/admin/sessions?limit=200', key),
        api('GET', '/v1/admin/payments?limit=200', key),
        api('GET', '/v1/admin/health', key),
      ]);
      const now = Date.now();
      $('active-count').textContent = active.data.sessions.length;
      const recentCount = recent.data.sessions.filter((s) => s.created_at && now - s.created_at < 600000).length;
      $('per-minute').textContent = (recentCount / 10).toFixed(1);
      const pays = payments.data.payments;
      const failed = pays.filter((p) => p.state === 'failed');
      $('failures').textContent = failed.length;
      const by = {};
      for (const p of pays) {
        const c = p.currency || '?';
        by[c] = by[c] || { paid: 0, refunded: 0, n: 0 };
        if (['succeeded', 'authorized', 'refunded'].includes(p.state)) {
          by[c].paid += p.captured || p.amount;
          by[c].n++;
        }
        by[c].refunded += p.refunded || 0;
      }
      $('revenue').replaceChildren(...Object.entries(by).map(([c, v]) => el('tr', {},
        el('td', {}, c), el('td', {}, money(v.paid, c)), el('td', {}, money(v.refunded, c)), el('td', {}, v.n))));
      $('health').replaceChildren(...Object.entries(health.data.services).map(([name, st]) =>
        el('span', { class: 'badge ' + (st === 'up' ? 'ok' : 'bad') }, name + ': ' + st)));
      $('live').replaceChildren(...active.data.sessions.map((s) => el('tr', {},
        el('td', {}, s.session_id), el('td', {}, s.state), el('td', {}, s.payer), el('td', {}, s.payee),
        el('td', {}, s.expires_at ? mmss(s.expires_at - (s.now || now)) : mmss(s.remaining_ms)))));
      $('failed').replaceChildren(...failed.slice(0, 20).map((p) => el('tr', {},
        el('td', {}, when(p.updated_at)), el('td', {}, p.payment_id), el('td', {}, p.payer),
        el('td', {}, p.failure_message || p.failure_code))));
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        clearInterval(timer);
        $('app').hidden = true;
        $('login').hidden = false;
        $('admin-key-error').textContent = 'This admin key was refused.';
        return;
      }
      $('updated').textContent = 'refresh failed: ' + err.message;
    }
  }
  function open() {
    sessionStorage.setItem('ppm_admin_key', key);
    $('login').hidden = true;
    $('app').hidden = false;
    refresh();
    clearInterval(timer);
    timer = setInterval(refresh, 5000);
  }
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    key = $('admin-key').value.trim();
    open();
  });
  if (key) open();
})();
