/* ppm.js: what every page shares: calling the API with a credential,
   turning SPEC §5 error bodies into per-field messages, and amounts in
   major units for people (minor units on the wire). No dependencies. */
'use strict';
const ppm = (() => {
  const ZERO = ['BIF','CLP','DJF','GNF','JPY','KMF','KRW','MGA','PYG','RWF','VND','VUV','XAF','XOF','XPF'];
  const THREE = ['BHD','JOD','KWD','OMR','TND'];
  function exponent(currency) {
    const c = String(currency || '').toUpperCase();
    if (ZERO.includes(c)) return 0;
    if (THREE.includes(c)) return 3;
    return 2;
  }
  /* 1234 USD → "12.34" (never floating point: string arithmetic) */
  function toMajor(minor, currency) {
    if (minor === null || minor === undefined || minor === '') return '';
    const e = exponent(currency);
    const neg = minor < 0;
    let s = String(Math.abs(minor));
    if (e === 0) return (neg ? '-' : '') + s;
    s = s.padStart(e + 1, '0');
    return (neg ? '-' : '') + s.slice(0, -e) + '.' + s.slice(-e);
  }
  /* "12.34" → 1234; null for blank; NaN for invalid */
  function toMinor(text, currency) {
    const t = String(text ?? '').trim();
    if (t === '') return null;
    const e = exponent(currency);
    const m = /^(\d{1,12})(?:\.(\d+))?$/.exec(t);
    if (!m || (m[2] && m[2].length > e)) return NaN;
    const frac = (m[2] || '').padEnd(e, '0');
    return Number(m[1] + frac);
  }
  function money(minor, currency) {
    return toMajor(minor, currency) + ' ' + String(currency || '').toUpperCase();
  }
  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || ('HTTP ' + status));
      this.status = status;
      this.code = err.code || '';
      this.fields = err.fields || [];
    }
    field(name) {
      const f = this.fields.find((x) => x.field === name);
      return f ? f.message : null;
    }
  }
  async function api(method, path, credential, body, extraHeaders) {
    const headers = Object.assign({}, extraHeaders || {});
    if (credential) headers['Authorization'] = 'Bearer ' + credential;
    const init = { method, headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { error: { code: 'UNAVAILABLE', message: 'cannot reach the server' } });
    }
    const type = res.headers.get('Content-Type') || '';
    const data = type.includes('json') ? await res.json().catch(() => ({})) : await res.text();
    if (!res.ok) throw new ApiError(res.status, data);
    return { data, headers: res.headers, status: res.status };
  }
  function params() {
    const out = {};
    const text = (location.hash || '').replace(/^#/, '') + '&' + (location.search || '').replace(/^\?/, '');
    for (const part of text.split('&')) {
      if (!part) continue;
      const [k, v] = part.split('=');
      out[decodeURIComponent(k)] = decodeURIComponent(v || '');
    }
    return out;
  }
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function mmss(ms) {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const m = Math.floor(total / 60);
    const s = total % 60;
    return String(m).padStart(2, '0') + ':' + String(s).padStart(2, '0');
  }
  function when(ms) {
    return ms ? new Date(ms).toLocaleString() : '';
  }
  return { api, ApiError, toMajor, toMinor, money, exponent, params, el, mmss, when };
})();
