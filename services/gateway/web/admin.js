/* admin.js: the admin panel. Reads and writes the tenant's settings and
   rates through the public API with the admin key; every API field error is
   shown under its field. Amounts are typed in major units and sent in
   minor units of the tenant's currency. The user-token secret is shown
   masked; a rotation shows the new one once, in a dialog that forgets it
   when closed. */
'use strict';
(() => {
  const { api, ApiError, toMajor, toMinor, money, params, el, when } = ppm;
  let key = sessionStorage.getItem('ppm_admin_key') || params().key || '';
  let settings = null;
  const $ = (id) => document.getElementById(id);
  const currency = () => (settings && settings.currency) || 'USD';

  function banner(kind, text) {
    const b = $('banner');
    b.replaceChildren(text ? el('div', { class: 'banner ' + kind }, text) : '');
  }
  function clearErrors(root) {
    root.querySelectorAll('.field-error').forEach((e) => { e.textContent = ''; });
    root.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
  }
  /* Puts each field error of err under its input; prefix names the
     error elements (err-<prefix><field>). Returns how many were shown. */
  function showFieldErrors(err, prefix, inputPrefix) {
    let shown = 0;
    for (const f of err.fields || []) {
      const base = String(f.field).replace(/\[\d+\]$/, '');
      const box = $('err-' + prefix + base);
      if (!box) continue;
      box.textContent = f.message;
      const input = $(inputPrefix + base);
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', box.id);
        if (shown === 0) input.focus();
      }
      shown++;
    }
    return shown;
  }
  function failure(err, prefix, inputPrefix) {
    if (!(err instanceof ApiError)) { banner('error', String(err)); return; }
    if (err.status === 401) { signOut('Your admin key was refused.'); return; }
    const shown = showFieldErrors(err, prefix || '', inputPrefix || 's-');
    banner('error', shown ? 'Please fix the highlighted fields.' : err.message);
  }
  function signOut(message) {
    sessionStorage.removeItem('ppm_admin_key');
    key = '';
    $('app').hidden = true;
    $('login').hidden = false;
    $('admin-key-error').textContent = message || '';
  }

  /* ---- tabs ---- */
  const tabs = Array.from(document.querySelectorAll('[role=tab]'));
  function select(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', on ? 'true' : 'false');
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    }
    banner('', '');
    const loaders = { 'tab-users': loadUsers, 'tab-roles': loadRoles, 'tab-sessions': loadSessions,
      'tab-payments': loadPayments, 'tab-earnings': loadEarnings, 'tab-audit': loadAudit,
      'tab-tokens': loadTokenSecret };
    if (loaders[tab.id]) loaders[tab.id]();
  }
  tabs.forEach((t, i) => {
    t.addEventListener('click', () => select(t));
    t.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
        const next = tabs[(i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
        next.focus();
        select(next);
      }
    });
  });

  /* ---- settings ---- */
  const TEXT = ['enable_for', 'rate_scope', 'currency', 'terms_url', 'stripe_mode', 'stripe_secret_key',
    'stripe_restricted_key', 'stripe_publishable_key', 'stripe_webhook_secret', 'billing_mode', 'rounding'];
  const INTS = ['grace_s', 'max_minutes_per_purchase', 'max_session_minutes', 'max_concurrent_sessions',
    'free_trial_minutes', 'session_ttl_s'];
  const MONEY = ['default_call_per_minute', 'default_chat_per_minute'];
  const LISTS = ['preset_minutes', 'warning_marks_s'];

  function fill(s) {
    settings = s;
    $('f-enabled').checked = !!s.enabled;
    const pro = s.plan === 'pro' || s.plan === 'enterprise';
    $('plan-badge').textContent = 'Plan: ' + (s.plan || '?') + (pro ? '' : ' — Pay-per-Minute requires the Pro plan');
    $('plan-badge').className = 'badge ' + (pro ? 'ok' : 'bad');
    for (const f of TEXT) $('s-' + f).value = s[f] || '';
    for (const f of INTS) $('s-' + f).value = s[f] ?? '';
    for (const f of MONEY) $('s-' + f).value = toMajor(s[f], s.currency);
    for (const f of LISTS) $('s-' + f).value = (s[f] || []).join(', ');
    $('s-refund_unused').checked = !!s.refund_unused;
    $('s-cors_allowed_origins').value = (s.cors_allowed_origins || []).join(', ');
    $('webhook-url').textContent = location.origin + '/v1/stripe/webhook/' + (s.tenant_id || '');
    $('settings-version').textContent = 'Version ' + s.version + (s.updated_at_ms ? ' — saved ' + when(s.updated_at_ms) + (s.updated_by ? ' by ' + s.updated_by : '') : '');
    document.querySelectorAll('.cur').forEach((c) => { c.textContent = s.currency; });
  }
  function collect() {
    const out = {};
    const errors = [];
    const cur = $('s-currency').value.trim().toUpperCase() || currency();
    out.enabled = $('f-enabled').checked;
    for (const f of TEXT) out[f] = $('s-' + f).value.trim();
    out.currency = cur;
    for (const f of INTS) {
      const v = $('s-' + f).value.trim();
      out[f] = v === '' ? 0 : Number(v);
      if (!Number.isInteger(out[f])) errors.push({ field: f, message: 'must be a whole number' });
    }
    for (const f of MONEY) {
      const v = toMinor($('s-' + f).value, cur);
      if (Number.isNaN(v)) errors.push({ field: f, message: 'must be an amount such as 2.50' });
      out[f] = v === null || Number.isNaN(v) ? 0 : v;
    }
    for (const f of LISTS) {
      const parts = $('s-' + f).value.split(',').map((x) => x.trim()).filter((x) => x !== '');
      out[f] = parts.map(Number);
      if (out[f].some((n) => !Number.isInteger(n))) errors.push({ field: f, message: 'must be whole numbers separated by commas' });
    }
    out.refund_unused = $('s-refund_unused').checked;
    out.cors_allowed_origins = $('s-cors_allowed_origins').value.split(',').map((x) => x.trim()).filter(Boolean);
    return { out, errors };
  }
  async function loadSettings() {
    const { data } = await api('GET', '/v1/admin/settings', key);
    fill(data);
  }
  async function save(body) {
    clearErrors(document);
    try {
      const { data } = await api('PUT', '/v1/admin/settings', key, body, { 'If-Match': '"' + settings.version + '"' });
      fill(data);
      banner('ok', 'Saved (version ' + data.version + ').');
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) {
        banner('error', 'Someone else changed the settings meanwhile; they were reloaded. Please check and save again.');
        await loadSettings();
        return;
      }
      if (err instanceof ApiError && err.status === 403) {
        $('err-enabled').textContent = err.message;
      }
      failure(err);
    }
  }
  $('settings-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const { out, errors } = collect();
    clearErrors(document);
    if (errors.length) {
      showFieldErrors({ fields: errors }, '', 's-');
      banner('error', 'Please fix the highlighted fields.');
      return;
    }
    save(out);
  });
  $('features-save').addEventListener('click', () => {
    const { out } = collect();
    save(Object.assign({}, settings, out, { enabled: $('f-enabled').checked }));
  });

  /* ---- users and the Edit popup ---- */
  const dialog = $('rates-dialog');
  let editing = null;
  async function openRates(user) {
    clearErrors(dialog);
    editing = user;
    $('rates-user').textContent = user;
    try {
      const { data } = await api('GET', '/v1/admin/users/' + encodeURIComponent(user) + '/rates', key);
      $('rates-call').value = toMajor(data.call_per_minute, currency());
      $('rates-chat').value = toMajor(data.chat_per_minute, currency());
      dialog.showModal();
      $('rates-call').focus();
    } catch (err) { failure(err); }
  }
  $('rates-cancel').addEventListener('click', () => dialog.close());
  $('rates-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(dialog);
    const call = toMinor($('rates-call').value, currency());
    const chat = toMinor($('rates-chat').value, currency());
    const local = [];
    if (Number.isNaN(call)) local.push({ field: 'call_per_minute', message: 'must be an amount such as 2.50, or blank for free' });
    if (Number.isNaN(chat)) local.push({ field: 'chat_per_minute', message: 'must be an amount such as 1.00, or blank for free' });
    if (local.length) { showFieldErrors({ fields: local }, 'rates-', 'rates-x-'); return; }
    try {
      await api('PUT', '/v1/admin/users/' + encodeURIComponent(editing) + '/rates', key,
        { call_per_minute: call, chat_per_minute: chat });
      dialog.close();
      banner('ok', 'Rates of ' + editing + ' saved.');
      loadUsers();
    } catch (err) {
      if (err instanceof ApiError && showFieldErrors(err, 'rates-', 'rates-x-')) return;
      failure(err);
    }
  });
  $('user-find').addEventListener('submit', (e) => {
    e.preventDefault();
    const u = $('user-id').value.trim();
    if (u) openRates(u);
  });
  const rateCell = (v) => (v === null || v === undefined ? 'free' : money(v, currency()));
  async function loadUsers() {
    try {
      const { data } = await api('GET', '/v1/admin/users?limit=200', key);
      $('users-body').replaceChildren(...data.users.map((u) => el('tr', {},
        el('td', {}, u.user_id), el('td', {}, rateCell(u.call_per_minute)), el('td', {}, rateCell(u.chat_per_minute)),
        el('td', {}, el('button', { type: 'button', class: 'secondary', onclick: () => openRates(u.user_id), 'aria-label': 'Edit rates of ' + u.user_id }, 'Edit')))));
    } catch (err) { failure(err); }
  }

  /* ---- roles ---- */
  async function loadRoles() {
    try {
      const { data } = await api('GET', '/v1/admin/roles', key);
      $('roles-body').replaceChildren(...data.roles.map((r) => el('tr', {},
        el('td', {}, r.role), el('td', {}, rateCell(r.call_per_minute)), el('td', {}, rateCell(r.chat_per_minute)), el('td', {}, r.priority))));
    } catch (err) { failure(err); }
  }
  $('role-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors($('role-form'));
    const role = $('r-role').value.trim();
    if (!role) { $('err-r-role').textContent = 'is required'; return; }
    const call = toMinor($('r-call').value, currency());
    const chat = toMinor($('r-chat').value, currency());
    if (Number.isNaN(call) || Number.isNaN(chat)) { banner('error', 'Amounts must look like 2.50, or be blank for free.'); return; }
    try {
      await api('PUT', '/v1/admin/roles/' + encodeURIComponent(role) + '/rates', key,
        { call_per_minute: call, chat_per_minute: chat, priority: Number($('r-priority').value || 0) });
      banner('ok', 'Role ' + role + ' saved.');
      loadRoles();
    } catch (err) { failure(err, 'r-', 'r-x-'); }
  });

  /* ---- lists ---- */
  async function loadSessions() {
    try {
      const state = $('sessions-state').value;
      const { data } = await api('GET', '/v1/admin/sessions?limit=100' + (state ? '&state=' + state : ''), key);
      $('sessions-body').replaceChildren(...data.sessions.map((s) => el('tr', {},
        el('td', {}, s.session_id), el('td', {}, el('span', { class: 'badge' }, s.state)), el('td', {}, s.kind),
        el('td', {}, s.payer), el('td', {}, s.payee), el('td', {}, s.paid ? money(s.rate_per_minute, s.currency) + '/min' : 'free'),
        el('td', {}, ppm.mmss(s.used_ms) + ' / ' + ppm.mmss(s.funded_ms)), el('td', {}, when(s.created_at)))));
    } catch (err) { failure(err); }
  }
  $('sessions-refresh').addEventListener('click', loadSessions);
  $('sessions-state').addEventListener('change', loadSessions);
  async function loadPayments() {
    try {
      const { data } = await api('GET', '/v1/admin/payments?limit=100', key);
      $('payments-body').replaceChildren(...data.payments.map((p) => el('tr', {},
        el('td', {}, p.payment_id), el('td', {}, p.session_id), el('td', {}, p.payer), el('td', {}, p.payee),
        el('td', {}, p.minutes), el('td', {}, money(p.amount, p.currency)),
        el('td', {}, el('span', { class: 'badge ' + (p.state === 'failed' ? 'bad' : p.state === 'succeeded' ? 'ok' : '') }, p.state),
          p.failure_message ? el('div', { class: 'hint' }, p.failure_message) : null),
        el('td', {}, money(p.refunded, p.currency)), el('td', {}, when(p.created_at)))));
    } catch (err) { failure(err); }
  }
  $('payments-refresh').addEventListener('click', loadPayments);
  $('payments-csv').addEventListener('click', async () => {
    try {
      const res = await fetch('/v1/admin/payments.csv', { headers: { Authorization: 'Bearer ' + key } });
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => ({})));
      const blob = await res.blob();
      const a = el('a', { href: URL.createObjectURL(blob), download: 'payments.csv' });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) { failure(err); }
  });
  async function loadEarnings() {
    try {
      const { data } = await api('GET', '/v1/admin/earnings', key);
      $('earnings-body').replaceChildren(...data.payees.map((e) => el('tr', {},
        el('td', {}, e.payee), el('td', {}, e.payments), el('td', {}, e.minutes), el('td', {}, money(e.charged, e.currency)),
        el('td', {}, money(e.refunded, e.currency)), el('td', {}, money(e.net, e.currency)))));
    } catch (err) { failure(err); }
  }
  async function loadAudit() {
    try {
      const { data } = await api('GET', '/v1/admin/audit?limit=200', key);
      $('audit-body').replaceChildren(...data.entries.map((a) => el('tr', {},
        el('td', {}, when(a.at)), el('td', {}, a.actor), el('td', {}, a.field), el('td', {}, a.old_value), el('td', {}, a.new_value))));
    } catch (err) { failure(err); }
  }

  /* ---- user tokens: the signing secret ---- */
  const rotateDialog = $('rotate-dialog');
  function showTokenSecret(masked, rotatedAt) {
    $('token-secret-mask').textContent = masked;
    $('token-secret-rotated').textContent = rotatedAt ? when(rotatedAt) : '';
  }
  async function loadTokenSecret() {
    $('tokens-tenant').textContent = (settings && settings.tenant_id) || '';
    $('token-secret-error').textContent = '';
    try {
      const { data } = await api('GET', '/v1/admin/user-token-secret', key);
      showTokenSecret(data.masked, data.rotated_at);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) { failure(err); return; }
      /* e.g. a secret sealed under an older master key: rotating fixes it */
      showTokenSecret('unknown', 0);
      $('token-secret-error').textContent = err.message;
    }
  }
  function forgetNewSecret() {
    $('rotate-secret').value = '';
    $('rotate-copied').textContent = '';
    $('rotate-result').hidden = true;
    $('rotate-confirm').hidden = false;
  }
  $('token-secret-rotate').addEventListener('click', () => {
    forgetNewSecret();
    rotateDialog.showModal();
    $('rotate-cancel').focus(); /* the safe choice first */
  });
  $('rotate-cancel').addEventListener('click', () => rotateDialog.close());
  rotateDialog.addEventListener('close', () => {
    forgetNewSecret();
    $('token-secret-rotate').focus();
  });
  $('rotate-go').addEventListener('click', async () => {
    $('rotate-go').disabled = true;
    try {
      const { data } = await api('POST', '/v1/admin/user-token-secret', key, {});
      showTokenSecret(data.masked, data.rotated_at);
      $('token-secret-error').textContent = '';
      $('rotate-confirm').hidden = true;
      $('rotate-result').hidden = false;
      $('rotate-secret').value = data.secret;
      $('rotate-secret').focus();
      $('rotate-secret').select();
      banner('ok', 'The user-token secret was rotated. Tokens signed with the old one are refused.');
    } catch (err) {
      rotateDialog.close();
      failure(err);
    } finally {
      $('rotate-go').disabled = false;
    }
  });
  $('rotate-copy').addEventListener('click', async () => {
    const input = $('rotate-secret');
    try {
      await navigator.clipboard.writeText(input.value);
      $('rotate-copied').textContent = 'Copied.';
    } catch (e) {
      input.focus();
      input.select();
      $('rotate-copied').textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
    }
  });
  /* forgotten at once, not only when the dialog's close event comes */
  $('rotate-done').addEventListener('click', () => {
    forgetNewSecret();
    rotateDialog.close();
  });

  /* ---- start ---- */
  async function open() {
    try {
      await loadSettings();
      sessionStorage.setItem('ppm_admin_key', key);
      $('login').hidden = true;
      $('app').hidden = false;
      $('ops-link').href = '/ops.html#key=' + encodeURIComponent(key);
      tabs[0].focus();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) signOut('This admin key was refused.');
      else $('admin-key-error').textContent = err.message;
    }
  }
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    key = $('admin-key').value.trim();
    open();
  });
  if (key) open();
})();
