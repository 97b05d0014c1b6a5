/* widget.js: what a platform embeds. Starting a paid conversation shows
   the payment prompt; the popup offers the presets with their totals,
   custom minutes, the terms (which must be accepted) and, in test mode, a
   test-card picker; once paid, the countdown follows the session's events
   (server-sent events) and offers Add time and End. */
'use strict';
(() => {
  const { api, ApiError, money, params, el, mmss } = ppm;
  const $ = (id) => document.getElementById(id);
  const p = params();
  let token = sessionStorage.getItem('ppm_user_token') || p.token || '';
  let payee = p.payee || sessionStorage.getItem('ppm_payee') || '';
  let quote = null;
  let session = null;
  let minutes = null;
  let events = null;
  let deadline = null; /* local clock ms when the paid time ends (active) */
  let remaining = 0;
  let state = '';
  let timer = null;
  let heartbeat = null;

  function show(id, on) { $(id).hidden = !on; }
  function errorBox(id, text) {
    $(id).replaceChildren(text ? el('div', { class: 'banner error' }, text) : '');
  }

  /* ---- start ---- */
  function ready() {
    sessionStorage.setItem('ppm_user_token', token);
    sessionStorage.setItem('ppm_payee', payee);
    $('payee-name').textContent = payee;
    show('setup', false);
    show('start', true);
  }
  $('setup-form').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    payee = $('payee').value.trim();
    if (token && payee) ready();
  });

  async function start(kind) {
    errorBox('start-error', '');
    try {
      const q = await api('GET', '/v1/quote?payee=' + encodeURIComponent(payee) + '&kind=' + kind, token);
      quote = q.data;
      const s = await api('POST', '/v1/sessions', token, { payee, kind });
      session = s.data;
      $('session-id').textContent = session.session_id;
      if (session.state === 'awaiting_payment' && quote.paid) {
        $('prompt-rate').textContent = money(quote.rate_per_minute, quote.currency);
        show('start', false);
        show('prompt', true);
        $('prompt-pay').focus();
      } else {
        openSession();
      }
    } catch (err) {
      errorBox('start-error', err.message);
    }
  }
  $('start-chat').addEventListener('click', () => start('chat'));
  $('start-call').addEventListener('click', () => start('call'));
  $('prompt-cancel').addEventListener('click', () => { show('prompt', false); show('start', true); });
  $('prompt-pay').addEventListener('click', openPopup);

  /* ---- the payment popup ---- */
  function total() {
    return minutes ? money(minutes * quote.rate_per_minute, quote.currency) : '—';
  }
  function refreshPay() {
    $('total').textContent = total();
    $('pay-button').disabled = !(minutes && $('accept-terms').checked);
    for (const b of $('presets').querySelectorAll('button')) {
      b.setAttribute('aria-pressed', Number(b.dataset.minutes) === minutes ? 'true' : 'false');
    }
  }
  function openPopup() {
    errorBox('pay-error', '');
    $('err-minutes').textContent = '';
    $('err-accept_terms').textContent = '';
    $('pay-rate').textContent = money(quote.rate_per_minute, quote.currency);
    $('presets').replaceChildren(...quote.presets.map((pr) => el('button', {
      type: 'button', 'data-minutes': pr.minutes, 'aria-pressed': 'false',
      onclick: () => { minutes = pr.minutes; $('custom-minutes').value = ''; refreshPay(); },
    }, pr.minutes + ' min', el('small', {}, money(pr.amount, quote.currency)))));
    $('minutes-range').textContent = quote.min_minutes ? '(' + quote.min_minutes + '–' + quote.max_minutes + ')' : '';
    $('custom-minutes').min = quote.min_minutes || 1;
    $('custom-minutes').max = quote.max_minutes || 600;
    $('terms-link').href = quote.terms_url || '#';
    $('accept-terms').checked = false;
    minutes = null;
    pending = null;
    const live = quote.stripe_mode === 'live';
    $('test-cards').hidden = live;
    refreshPay();
    $('pay').showModal();
    const first = $('presets').querySelector('button');
    if (first) first.focus();
  }
  $('custom-minutes').addEventListener('input', () => {
    const v = Number($('custom-minutes').value);
    $('err-minutes').textContent = '';
    if (!$('custom-minutes').value) { minutes = null; refreshPay(); return; }
    if (!Number.isInteger(v) || v < (quote.min_minutes || 1) || (quote.max_minutes && v > quote.max_minutes)) {
      minutes = null;
      $('err-minutes').textContent = 'Choose between ' + (quote.min_minutes || 1) + ' and ' + (quote.max_minutes || 600) + ' minutes.';
    } else {
      minutes = v;
    }
    refreshPay();
  });
  $('accept-terms').addEventListener('change', refreshPay);
  $('pay-cancel').addEventListener('click', () => $('pay').close());

  function declineText(err) {
    const code = err.field && err.field('decline_code');
    const reasons = {
      generic_decline: 'Your card was declined.',
      insufficient_funds: 'Your card has insufficient funds.',
      authentication_required: 'Your bank requires authentication.',
    };
    return (code && reasons[code]) ? reasons[code] + ' (' + code + ') Try another card.' : err.message + ' Try another card.';
  }
  /* A payment started for some minutes is confirmed again after a decline
     (the payment service allows it) instead of starting another one. */
  let pending = null; /* { id, minutes, clientSecret, publishableKey } */
  let stripe = null;
  let cardElement = null;

  function loadStripe() {
    return new Promise((resolve, reject) => {
      if (window.Stripe) { resolve(window.Stripe); return; }
      const tag = el('script', { src: 'https://js.stripe.com/v3/' });
      tag.addEventListener('load', () => resolve(window.Stripe));
      tag.addEventListener('error', () => reject(new Error('Stripe.js could not be loaded')));
      document.head.append(tag);
    });
  }
  async function mountCard(publishableKey) {
    if (cardElement) return;
    const Stripe = await loadStripe();
    stripe = Stripe(publishableKey);
    cardElement = stripe.elements().create('card');
    $('stripe-element').hidden = false;
    cardElement.mount('#stripe-element');
  }
  async function payLive(co) {
    await mountCard(co.publishable_key);
    const result = await stripe.confirmCardPayment(co.client_secret, { payment_method: { card: cardElement } });
    if (result.error) throw new Error(result.error.message + ' Try another card.');
  }

  $('pay-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    errorBox('pay-error', '');
    if (!$('accept-terms').checked) {
      $('err-accept_terms').textContent = 'Please accept the terms and conditions to pay.';
      return;
    }
    $('pay-button').disabled = true;
    try {
      if (!pending || pending.minutes !== minutes) {
        const co = await api('POST', '/v1/sessions/' + session.session_id + '/checkout', token,
          { minutes, accept_terms: true });
        pending = { id: co.data.payment_id, minutes, data: co.data };
      }
      if (quote.stripe_mode === 'live') {
        await payLive(pending.data);
      } else {
        const card = (document.querySelector('input[name=card]:checked') || {}).value || 'pm_card_visa';
        const cf = await api('POST', '/v1/sessions/' + session.session_id + '/confirm', token,
          { payment_method: card, payment_id: pending.id });
        if (cf.data.state === 'requires_action') {
          errorBox('pay-error', 'Your bank asks for authentication (3-D Secure), which this test card cannot complete here. Choose another card.');
          $('pay-button').disabled = false;
          return;
        }
      }
      pending = null;
      $('pay').close();
      openSession();
    } catch (err) {
      if (err instanceof ApiError && err.field('accept_terms')) $('err-accept_terms').textContent = err.field('accept_terms');
      if (err instanceof ApiError && err.field('minutes')) $('err-minutes').textContent = err.field('minutes');
      errorBox('pay-error', err instanceof ApiError && err.status === 422 ? declineText(err) : err.message);
      refreshPay();
    }
  });

  /* ---- the active session ---- */
  function render() {
    const left = state === 'active' && deadline ? Math.max(0, deadline - Date.now()) : remaining;
    $('countdown').textContent = mmss(left);
    $('state-badge').textContent = state.replace('_', ' ');
    $('paused-badge').hidden = state !== 'paused';
    const up = state === 'expired' || (state === 'active' && left <= 0 && quote && quote.paid);
    $('timeup').hidden = !up;
    $('add-time').textContent = up ? 'Buy more minutes' : 'Add time';
    $('add-time').hidden = !(quote && quote.paid) || state === 'ended';
    $('end').hidden = state === 'ended';
  }
  function apply(data) {
    if (data.state) state = data.state;
    if (typeof data.remaining_ms === 'number') {
      remaining = data.remaining_ms;
      deadline = state === 'active' ? Date.now() + data.remaining_ms : null;
    }
    render();
  }
  function openSession() {
    show('start', false);
    show('prompt', false);
    show('active', true);
    state = session.state;
    remaining = session.remaining_ms || 0;
    render();
    if (events) events.close();
    /* EventSource cannot send headers: the stream goes through fetch. */
    streamEvents();
    clearInterval(timer);
    timer = setInterval(render, 250);
    clearInterval(heartbeat);
    /* The gateway says how often: a third of the session's grace in real
       time (shorter under a test time scale), at most 10 s. */
    heartbeat = setInterval(() => {
      api('POST', '/v1/sessions/' + session.session_id + '/heartbeat', token).catch(() => {});
    }, session.heartbeat_every_ms || 10000);
    $('add-time').focus();
  }
  async function streamEvents() {
    const controller = new AbortController();
    events = controller;
    events.close = () => controller.abort();
    let lastId = null;
    for (let attempt = 0; attempt < 100 && events === controller; attempt++) {
      try {
        const headers = { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const res = await fetch('/v1/sessions/' + session.session_id + '/events', { headers, signal: controller.signal });
        if (!res.ok) throw new Error('HTTP ' + res.status);
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let name = 'message';
            let data = '';
            for (const line of frame.split('\n')) {
              if (line.startsWith('event: ')) name = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
              else if (line.startsWith('id: ')) lastId = line.slice(4);
            }
            if (data) onEvent(name, JSON.parse(data));
          }
        }
        if (state === 'ended') return;
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  function onEvent(name, data) {
    if (name === 'warning') {
      const mark = data.warning_mark_s;
      $('warning').replaceChildren(el('div', { class: 'banner warn' },
        mark >= 60 ? Math.round(mark / 60) + ' minute' + (mark >= 120 ? 's' : '') + ' left.' : mark + ' seconds left.',
        ' Add time to keep talking.'));
    } else if (name === 'extended' || name === 'active' || name === 'resumed') {
      $('warning').replaceChildren();
    } else if (name === 'payment_failed') {
      $('warning').replaceChildren(el('div', { class: 'banner error' }, 'Payment failed: ' + (data.failure_message || data.failure_code)));
    }
    if (name === 'ended') {
      $('ended').replaceChildren(el('div', { class: 'banner ok' }, 'The conversation has ended.'));
      clearInterval(heartbeat);
    }
    if (!name.startsWith('payment_')) apply(data);
  }
  $('add-time').addEventListener('click', openPopup);
  $('end').addEventListener('click', async () => {
    try {
      const { data } = await api('POST', '/v1/sessions/' + session.session_id + '/end', token, {});
      state = 'ended';
      remaining = 0;
      render();
      clearInterval(heartbeat);
      $('ended').replaceChildren(el('div', { class: 'banner ok' },
        'Ended after ' + mmss(data.used_ms) + '.' + (quote && quote.paid ? ' Billed ' + money(data.billed_amount || 0, quote.currency) + '.' : '')));
      if (events) events.close();
    } catch (err) {
      $('ended').replaceChildren(el('div', { class: 'banner error' }, err.message));
    }
  });

  if (token && payee) ready();
})();
