'use strict';
// The sipedge status page. The admin token arrives only in the URL fragment
// (/status#token=…), which browsers never send to a server; it is kept in this tab's
// sessionStorage, removed from the address bar, and sent as a bearer header to
// /status.json. Without it, nothing but /readyz is shown.
(function () {
  var KEY = 'sipedge-admin-token';
  var REFRESH_MS = 2000;
  var token = null;
  var refused = false;
  var NEED = 'This page needs the admin token: open it as /status#token=… with the token from ' +
    '<state_dir>/admin.token. The token stays in this browser tab and is never sent in a URL.';
  var REFUSED = 'The admin token was refused. Open the page again as /status#token=… with the ' +
    'current token from <state_dir>/admin.token.';

  function takeToken() {
    var h = window.location.hash || '';
    if (h.length > 1) {
      var t = new URLSearchParams(h.slice(1)).get('token');
      if (t) {
        try { window.sessionStorage.setItem(KEY, t); } catch (e) { /* kept in memory */ }
        window.history.replaceState(null, '', window.location.pathname + window.location.search);
        return t;
      }
    }
    try { return window.sessionStorage.getItem(KEY); } catch (e) { return null; }
  }

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function badge(text) {
    return el('span', 'badge ' + String(text).toLowerCase().replace(/[^a-z]+/g, '-'), text);
  }

  function row(cells, cls, name) {
    var tr = el('tr', cls);
    if (name) { tr.setAttribute('data-name', name); }
    cells.forEach(function (c) {
      var td = el('td');
      if (c instanceof Node) { td.appendChild(c); } else { td.textContent = c === null || c === undefined ? '' : String(c); }
      tr.appendChild(td);
    });
    return tr;
  }

  function fill(id, nodes) {
    var box = $(id);
    while (box.firstChild) { box.removeChild(box.firstChild); }
    nodes.forEach(function (n) { box.appendChild(n); });
  }

  function show(id, on) { $(id).hidden = !on; }

  function notice(text) {
    var n = $('notice');
    n.textContent = text || '';
    n.hidden = !text;
  }

  function setReady(ok, reasons) {
    var b = $('ready');
    b.textContent = ok ? 'ready' : 'not ready' + (reasons && reasons.length ? ': ' + reasons.join(', ') : '');
    b.className = 'badge ' + (ok ? 'ready' : 'not-ready');
  }

  function hideData() {
    ['summary-section', 'sites-section', 'peers-section', 'certs-section',
      'refusals-section', 'failures-section'].forEach(function (id) { show(id, false); });
    ['sites', 'peers', 'certs', 'refusals', 'failures'].forEach(function (id) { fill(id, []); });
    $('forget').hidden = true;
  }

  function uptime(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm';
  }

  function load(g) {
    return g.max_sessions === null || g.max_sessions === undefined
      ? String(g.sessions) : g.sessions + ' / ' + g.max_sessions;
  }

  function render(s) {
    var a = s.appliance;
    setReady(a.ready, a.not_ready);
    $('updated').textContent = 'updated ' + s.generated;
    $('live-calls').textContent = String(s.calls.live);
    $('site').textContent = a.site;
    var ended = s.calls.ended || {};
    var total = Object.keys(ended).reduce(function (n, k) { return n + ended[k]; }, 0);
    $('calls-ended').textContent = total + (total ? ' (' + (ended.answered || 0) + ' answered)' : '');
    $('media-ports').textContent = s.media ? s.media.ports_free + ' / ' + s.media.ports_total : 'no anchoring';
    $('uptime').textContent = uptime(a.uptime_s);
    $('version').textContent = a.version;

    fill('sites', s.sites.map(function (site) {
      var c = el('div', 'card site');
      c.setAttribute('data-name', site.name);
      c.appendChild(el('div', 'k', site.this_appliance ? 'site (this appliance)' : 'site'));
      c.appendChild(el('div', 'v', site.name));
      c.appendChild(el('div', 'muted', 'edge ' + site.access_edge_fqdn + ', ' + site.gateways + ' gateways'));
      var ul = el('ul');
      site.mediation_servers.forEach(function (m) {
        var li = el('li', null, m.name + ' ');
        li.appendChild(badge(m.health));
        ul.appendChild(li);
      });
      c.appendChild(ul);
      return c;
    }));

    var peers = s.gateways.map(function (g) {
      return row([g.name, badge(g.health), load(g), g.site, g.address + ' ' + g.transport], 'gateway', g.name);
    });
    var p = s.cloud_peer;
    peers.push(row([p.name, badge(p.health), '', 'cloud peer', p.address + ' ' + p.transport], 'cloud-peer', p.name));
    fill('peers', peers);

    fill('certs', s.certificates.map(function (c) {
      var left = c.days_left;
      var state = c.error ? badge('error') : badge(left < 0 ? 'expired' : left < 30 ? 'warning' : 'healthy');
      state.textContent = c.error ? c.error : left + ' days';
      return row([c.certificate, state, c.not_after || '', c.subject], 'certificate', c.certificate);
    }));

    fill('refusals', s.tls_refusals.length ? s.tls_refusals.map(function (r) {
      return row([r.at, r.reason, r.side + ' ' + r.direction, r.remote], 'refusal');
    }) : [row(['none', '', '', ''])]);

    fill('failures', s.recent_failures.length ? s.recent_failures.map(function (f) {
      return row([f.at, f.status + ' ' + f.outcome, f.direction, f.gateway || '', f.reason], 'failure');
    }) : [row(['none', '', '', '', ''])]);

    ['summary-section', 'sites-section', 'peers-section', 'certs-section',
      'refusals-section', 'failures-section'].forEach(function (id) { show(id, true); });
    $('forget').hidden = false;
  }

  function readiness() {
    return fetch('/readyz', { cache: 'no-store' })
      .then(function (r) { return r.json().then(function (j) { setReady(r.ok, j.reasons || []); }); })
      .catch(function () { setReady(false, ['admin API not reachable']); });
  }

  function forget() {
    token = null;
    try { window.sessionStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
    hideData();
  }

  function refresh() {
    if (!token) {
      hideData();
      notice(refused ? REFUSED : NEED);
      return readiness();
    }
    return fetch('/status.json', { cache: 'no-store', headers: { 'Authorization': 'Bearer ' + token } })
      .then(function (r) {
        if (r.status === 401) {
          forget();
          refused = true;
          notice(REFUSED);
          return readiness();
        }
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json().then(function (s) { notice(''); render(s); });
      })
      .catch(function (e) { notice('Cannot reach the appliance (' + e.message + '); retrying.'); });
  }

  function start() {
    token = takeToken();
    $('forget').addEventListener('click', function () { forget(); refused = false; refresh(); });
    refresh();
    window.setInterval(refresh, REFRESH_MS);
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
