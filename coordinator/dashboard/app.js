// ihc dashboard: plain JavaScript, no libraries. State comes from the coordinator's JSON API
// and its event stream (GET /v1/events, Server-Sent Events); everything shown from the
// network is inserted as text, never as HTML.
'use strict';

const FEED_MAX = 100;          // interrupts kept in the feed
const CHART_SPAN_MS = 300000;  // the chart's window
const CHART_STEP_MS = 10000;   // one point per step
const POLL_MS = 5000;          // agents and stats are refreshed this often anyway
const TOKEN_KEY = 'ihc_http_token';

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let source = null;             // the EventSource
const started = new Map();     // interrupt_id -> the interrupt event (for its ts_ms)
const samples = [];            // {t: ms, v: total_time_ms} of finished interrupts

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function fmtMs(ms) {
  if (typeof ms !== 'number' || !isFinite(ms)) return '–';
  if (ms >= 1000) return (ms / 1000).toFixed(2) + ' s';
  if (ms >= 100) return ms.toFixed(0) + ' ms';
  if (ms >= 10) return ms.toFixed(1) + ' ms';
  return ms.toFixed(2) + ' ms';
}

function fmtAgo(ms) {
  if (!ms) return '–';
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 1) return 'now';
  if (s < 120) return s.toFixed(0) + ' s ago';
  return new Date(ms).toLocaleTimeString();
}

// ---- the API, with the bearer token when one was given ----

class Unauthorized extends Error {}

async function api(path, options) {
  const opts = Object.assign({headers: {}}, options || {});
  if (token) opts.headers['Authorization'] = 'Bearer ' + token;
  const r = await fetch(path, opts);
  if (r.status === 401) throw new Unauthorized('token needed');
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
  return body;
}

function askToken(message) {
  $('token-form').hidden = false;
  $('token-error').textContent = message || '';
  setPill('stream', 'stream: token needed', 'bad');
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token-input').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token-form').hidden = true;
  start();
});

function setPill(id, text, cls) {
  const p = $(id);
  p.textContent = text;
  p.className = 'pill' + (cls ? ' ' + cls : '');
}

// ---- agents, sessions, stats ----

async function loadAgents() {
  const doc = await api('/v1/agents');
  const tbody = $('agents').tBodies[0];
  tbody.replaceChildren();
  const agents = (doc.agents || []).slice().sort((a, b) => a.agent_id.localeCompare(b.agent_id));
  for (const a of agents) {
    const tr = el('tr');
    tr.dataset.agent = a.agent_id;
    tr.append(el('td', 'mono agent-id', a.agent_id), el('td', null, a.node || '–'));
    tr.append(el('td', 'state-' + a.state, a.state), el('td', 'num', a.sessions));
    const hws = el('td');
    for (const hw of a.hardware_ids || []) hws.append(el('span', 'tag mono', hw));
    tr.append(hws, el('td', null, fmtAgo(a.last_seen_ms)));
    const mods = el('td');
    for (const m of a.modules || [])
      mods.append(el('span', 'tag', m.name + (m.enabled === false ? ' (off)' : '')));
    tr.append(mods);
    tbody.append(tr);
  }
  $('agents-count').textContent = agents.length + (agents.length === 1 ? ' agent' : ' agents');
}

async function loadSessions() {
  const doc = await api('/v1/sessions');
  const byHw = new Map();
  for (const s of doc.sessions || []) {
    const e = byHw.get(s.hardware_id) || {n: 0, agents: new Set()};
    e.n++;
    e.agents.add(s.agent_id);
    byHw.set(s.hardware_id, e);
  }
  const tbody = $('hws').tBodies[0];
  tbody.replaceChildren();
  for (const hw of [...byHw.keys()].sort()) {
    const e = byHw.get(hw);
    const tr = el('tr');
    tr.dataset.hw = hw;
    tr.append(el('td', 'mono', hw), el('td', 'num', e.n));
    const ag = el('td');
    for (const a of [...e.agents].sort()) ag.append(el('span', 'tag mono', a));
    const b = el('button', 'interrupt', 'Interrupt');
    b.type = 'button';
    b.addEventListener('click', () => interrupt(hw, b));
    const bt = el('td');
    bt.append(b);
    tr.append(ag, bt);
    tbody.append(tr);
  }
  $('sessions-count').textContent = (doc.count || 0) + ' active';
}

async function loadStats() {
  const s = await api('/v1/stats');
  setPill('redis', 'Redis: ' + (s.redis_connected ? 'up' : 'down'), s.redis_connected ? 'ok' : 'bad');
  setPill('backlog', 'backlog: ' + s.persist_backlog, s.persist_backlog > 0 ? 'bad' : '');
  const ok = s.successful_interrupts || 0, failed = s.failed_interrupts || 0;
  setPill('totals', 'interrupts: ' + ok + ' ok / ' + failed + ' failed', failed > 0 ? 'bad' : '');
}

async function interrupt(hw, button) {
  button.disabled = true;
  $('interrupt-msg').textContent = 'interrupting ' + hw + '…';
  try {
    const r = await api('/v1/interrupt', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({hardware_id: hw, reason: 'dashboard'}),
    });
    $('interrupt-msg').textContent = hw + ': ' + (r.success ? 'stopped' : (r.error || 'failed')) +
        (typeof r.total_time_ms === 'number' ? ' in ' + fmtMs(r.total_time_ms) : '');
  } catch (e) {
    if (e instanceof Unauthorized) askToken();
    $('interrupt-msg').textContent = hw + ': ' + e.message;
  } finally {
    button.disabled = false;
  }
}

// A refresh at most every 300 ms however many events ask for one.
const pending = new Map();
function soon(name, fn) {
  if (pending.has(name)) return;
  pending.set(name, setTimeout(() => {
    pending.delete(name);
    fn().catch(onError);
  }, 300));
}

function onError(e) {
  if (e instanceof Unauthorized) askToken();
  else console.warn(e);
}

// ---- the interrupt feed ----

function feedItem(id) {
  let li = document.querySelector('#feed > li[data-id="' + id + '"]');
  if (li) return li;
  li = el('li', 'pending');
  li.dataset.id = id;
  const head = el('div', 'head');
  head.append(el('span', 'verdict', 'in flight'), el('span', 'mono iid', '#' + id),
              el('span', 'mono hw'), el('span', 'total'), el('span', 'reason note'),
              el('span', 'when note'), el('span', 'err'));
  li.append(head, el('table', 'agents-of'));
  $('feed').prepend(li);
  while ($('feed').children.length > FEED_MAX) $('feed').lastElementChild.remove();
  return li;
}

function setField(li, cls, text) {
  li.querySelector('.head .' + cls).textContent = text;
}

function onInterrupt(d) {
  started.set(d.interrupt_id, d);
  if (started.size > 5000) started.delete(started.keys().next().value);
  const li = feedItem(d.interrupt_id);
  setField(li, 'hw', d.hardware_id);
  setField(li, 'reason', d.reason ? '“' + d.reason + '”' : '');
  setField(li, 'when', new Date(d.ts_ms).toLocaleTimeString());
  const t = li.querySelector('table');
  if (!t.rows.length)
    for (const a of d.expected || []) agentRow(t, a, 'waiting', []);
}

function agentRow(table, agent, status, mods) {
  const tr = table.insertRow();
  tr.dataset.agent = agent;
  tr.className = status;
  const slowest = mods.reduce((m, x) => Math.max(m, x.time_ms || 0), 0);
  const time = el('td', 'num atime', mods.length ? fmtMs(slowest) : '–');
  time.title = 'until its slowest module stopped, as the agent reported';
  tr.append(el('td', 'mono', agent), el('td', 'astatus', status), time);
  const mt = el('td');
  for (const m of mods) {
    const s = el('span', 'mod ' + m.status, m.name + ' ' + fmtMs(m.time_ms) +
                 (m.status !== 'ok' ? ' ' + m.status.replace('_', ' ') : ''));
    if (m.error) s.title = m.error;
    mt.append(s);
  }
  tr.append(mt);
}

function onResult(d) {
  const li = feedItem(d.interrupt_id);
  li.className = d.success ? 'ok' : 'failed';
  setField(li, 'verdict', d.success ? 'stopped' : 'failed');
  setField(li, 'hw', d.hardware_id);
  setField(li, 'total', fmtMs(d.total_time_ms));
  setField(li, 'reason', d.reason ? '“' + d.reason + '”' : '');
  setField(li, 'err', d.error || '');
  const t = li.querySelector('table');
  t.replaceChildren();
  const byAgent = new Map();
  for (const m of d.modules || []) {
    if (!byAgent.has(m.agent)) byAgent.set(m.agent, []);
    byAgent.get(m.agent).push(m);
  }
  const ag = d.agents || {};
  const missing = new Set(ag.missing || []);
  const names = new Set([...(ag.expected || []), ...(ag.answered || []), ...byAgent.keys()]);
  for (const a of [...names].sort())
    agentRow(t, a, missing.has(a) ? 'missing' : 'answered', byAgent.get(a) || []);
  const s = started.get(d.interrupt_id);
  started.delete(d.interrupt_id);
  const t0 = s ? s.ts_ms : Date.now();
  if (!li.querySelector('.when').textContent) setField(li, 'when', new Date(t0).toLocaleTimeString());
  samples.push({t: t0 + (d.total_time_ms || 0), v: d.total_time_ms || 0});
  chartSoon();
}

function onGap(d) {
  const li = el('li', 'gap', 'Some events were missed (held from ' + d.first_id +
                ' on): the lists above are reloaded, older interrupts may be absent.');
  $('feed').prepend(li);
  soon('agents', loadAgents);
  soon('sessions', loadSessions);
}

// ---- the chart: p50 and p99 per step over the window, on a canvas ----

function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.round(q * (sorted.length - 1)))];
}

let chartTimer = null;
function chartSoon() {
  if (!chartTimer) chartTimer = setTimeout(() => { chartTimer = null; drawChart(); }, 200);
}

function drawChart() {
  const now = Date.now();
  while (samples.length && samples[0].t < now - CHART_SPAN_MS - CHART_STEP_MS) samples.shift();
  const n = CHART_SPAN_MS / CHART_STEP_MS;
  const p50 = new Array(n).fill(NaN), p99 = new Array(n).fill(NaN);
  const buckets = Array.from({length: n}, () => []);
  for (const s of samples) {
    const i = n - 1 - Math.floor((now - s.t) / CHART_STEP_MS);
    if (i >= 0 && i < n) buckets[i].push(s.v);
  }
  let max = 0, min = Infinity, count = 0;
  buckets.forEach((b, i) => {
    if (!b.length) return;
    b.sort((x, y) => x - y);
    p50[i] = quantile(b, 0.5);
    p99[i] = quantile(b, 0.99);
    max = Math.max(max, p99[i]);
    min = Math.min(min, p50[i]);
    count += b.length;
  });
  const c = $('chart');
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || 560, h = c.clientHeight || 200;
  c.width = w * dpr;
  c.height = h * dpr;
  const g = c.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const left = 56, right = 8, top = 8, bottom = 22;
  const pw = w - left - right, ph = h - top - bottom;
  // times to stop span decades (a millisecond, or a timeout of seconds): a log scale
  const lo = Math.floor(Math.log10(count ? Math.max(min, 0.01) : 0.1));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(count ? Math.max(max, 0.01) : 10)));
  const yOf = (v) => top + ph - (ph * (Math.log10(Math.max(v, Math.pow(10, lo))) - lo)) / (hi - lo);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#687380';
  g.strokeStyle = '#e1e5ea';
  g.lineWidth = 1;
  for (let k = lo; k <= hi; k++) {
    const y = yOf(Math.pow(10, k));
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
    g.textAlign = 'right'; g.textBaseline = 'middle';
    g.fillText(k >= 3 ? Math.pow(10, k - 3) + ' s' : +Math.pow(10, k).toPrecision(1) + ' ms',
               left - 6, y);
  }
  g.textAlign = 'center'; g.textBaseline = 'top';
  for (let m = 0; m <= CHART_SPAN_MS / 60000; m += 1) {
    const x = left + pw - (pw * m * 60000) / CHART_SPAN_MS;
    g.fillText(m === 0 ? 'now' : '-' + m + ' min', x, top + ph + 6);
  }
  const line = (vals, color) => {
    g.strokeStyle = color; g.fillStyle = color; g.lineWidth = 2;
    let open = false;
    g.beginPath();
    vals.forEach((v, i) => {
      if (isNaN(v)) { open = false; return; }
      const x = left + (pw * (i + 0.5)) / n, y = yOf(v);
      if (open) g.lineTo(x, y); else g.moveTo(x, y);
      open = true;
      g.fillRect(x - 1.5, y - 1.5, 3, 3);
    });
    g.stroke();
  };
  line(p99, '#d9480f');
  line(p50, '#2d6cdf');
  $('chart-note').textContent = count ? count + ' interrupts in the window' : 'no interrupts yet';
}

// ---- the event stream ----

function connect() {
  if (source) source.close();
  // last_event_id=0: start with every event the coordinator still holds (the feed and the
  // chart fill at once); on a reconnect the browser's Last-Event-ID header takes over.
  let url = '/v1/events?last_event_id=0';
  if (token) url += '&token=' + encodeURIComponent(token);
  source = new EventSource(url);
  source.onopen = () => setPill('stream', 'stream: live', 'ok');
  source.onerror = () => {
    setPill('stream', 'stream: reconnecting', 'wait');
    if (source.readyState === EventSource.CLOSED)  // refused: find out why (token?)
      api('/v1/stats').then(() => setTimeout(connect, 2000), onError);
  };
  const on = (type, fn) => source.addEventListener(type, (ev) => {
    let d;
    try { d = JSON.parse(ev.data); } catch (e) { console.warn('bad event', ev.data); return; }
    fn(d);
  });
  on('interrupt', onInterrupt);
  on('result', (d) => {
    onResult(d);
    soon('stats', loadStats);
  });
  on('session_begin', () => soon('sessions', loadSessions));
  on('session_end', () => soon('sessions', loadSessions));
  on('agent_up', () => { soon('agents', loadAgents); soon('sessions', loadSessions); });
  on('agent_down', () => { soon('agents', loadAgents); soon('sessions', loadSessions); });
  on('redis_up', () => soon('stats', loadStats));
  on('redis_down', () => soon('stats', loadStats));
  on('gap', onGap);
  on('overflow', () => setPill('stream', 'stream: fell behind, resuming', 'wait'));
}

let started_ = false;
function start() {
  Promise.all([loadAgents(), loadSessions(), loadStats()])
    .then(() => {
      connect();
      if (!started_) {
        started_ = true;
        setInterval(() => {
          loadAgents().catch(onError);
          loadSessions().catch(onError);
          loadStats().catch(onError);
        }, POLL_MS);
        setInterval(drawChart, CHART_STEP_MS / 2);
      }
    })
    .catch(onError);
  drawChart();
}

start();
