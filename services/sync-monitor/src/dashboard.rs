//! The operator's dashboard (HTML), for an administrator who logs in with the admin token.
//! The page is one frame whose sections are filled from `/api/health` (and the error ledgers
//! and the settings audit) and refreshed every 15 seconds without reloading the page:
//! the overall status and its issues; one row per integration with lag, error rate and a
//! 24-hour chart; open conflicts linking to their review page; dead letters and error-ledger
//! rows with their actions (the owning service's admin API); bulk jobs with a progress bar;
//! the runtime settings, changed in place and audited; and "find a record": one record's whole
//! trail across every service, and whether it is stuck and why.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use shared::{
    http::{ApiError, pages::Site, session::AdminPage},
    notify::escape_html,
};

const SITE: Site = Site {
    home: "/dashboard",
    name: "datasync monitor",
    style: "main{max-width:1400px}section{margin:1.2em 0}h2{font-size:1.1em;margin:.2em 0 .4em}\
.badge{display:inline-block;padding:.2em .7em;border-radius:1em;color:#fff;font-weight:700}\
.healthy,.ok{background:#2e7d32}.degraded,.warning{background:#e08a00}.unhealthy,.error{background:#c62828}\
.idle{background:#888}td.num{text-align:right}svg.chart{vertical-align:middle}\
progress{width:10em}#issues li{margin:.2em 0}.muted{color:#666}textarea{width:100%;font-family:monospace}\
table{font-size:.92em}",
};

/// The dashboard's frame; its sections fill themselves from the JSON API.
#[get("/dashboard")]
pub async fn dashboard(admin: Result<AdminPage, ApiError>) -> HttpResponse {
    let Ok(admin) = admin else { return SITE.login_redirect() };
    let body = format!(
        "<meta name=\"csrf-token\" content=\"{csrf}\">\
         <section><h1>Sync health <span id=\"overall\" class=\"badge\">…</span></h1>\
         <p class=\"muted\">Checked <span id=\"checked-at\">…</span> · refreshed every 15 s \
         <button id=\"check-now\" type=\"button\">Check now</button></p><ul id=\"issues\"></ul></section>\
         <section><h2>Find a record</h2><form id=\"record-form\"><label>Id (ours, the system's, or a key) \
         <input id=\"record-id\" name=\"id\" size=\"32\"></label> <button id=\"record-find\" type=\"submit\">Find</button></form>\
         <div id=\"record-result\"></div></section>\
         <section><h2>Integrations</h2><table id=\"integrations\"><thead><tr><th>Integration</th><th>Status</th>\
         <th>Last sync</th><th>Lag / max (min)</th><th>Synced 1 h</th><th>Errors 1 h</th><th>Error rate</th>\
         <th>Queue</th><th>Dead letters</th><th>Ledger</th><th>Conflicts</th><th>Last 24 h</th></tr></thead><tbody></tbody></table></section>\
         <section><h2>Conflicts</h2><table id=\"conflicts\"><thead><tr><th>System</th><th>Entity</th><th>Record</th>\
         <th>Status</th><th>Since</th><th></th></tr></thead><tbody></tbody></table></section>\
         <section><h2>Dead letters</h2><table id=\"dead-letters\"><thead><tr><th>Integration</th><th>Service</th>\
         <th>Consumer</th><th>Error</th><th>At</th><th></th></tr></thead><tbody></tbody></table></section>\
         <section><h2>Error ledger</h2><table id=\"record-errors\"><thead><tr><th>Service</th><th>System</th>\
         <th>Record</th><th>Error</th><th>Attempts</th><th></th></tr></thead><tbody></tbody></table></section>\
         <section><h2>Bulk jobs</h2><table id=\"bulk-jobs\"><thead><tr><th>Job</th><th>Source → target</th>\
         <th>Entity</th><th>Status</th><th>Progress</th><th>Errors</th></tr></thead><tbody></tbody></table></section>\
         <section><h2>Runtime settings</h2><form id=\"setting-form\"><label>Setting <select id=\"setting-key\"></select></label>\
         <textarea id=\"setting-value\" rows=\"4\"></textarea> <button id=\"setting-save\" type=\"submit\">Save</button> \
         <span id=\"setting-result\"></span></form>\
         <h2>Changes</h2><table id=\"audit\"><thead><tr><th>When</th><th>Who</th><th>Where</th><th>Setting</th><th>Old</th><th>New</th></tr>\
         </thead><tbody></tbody></table></section><script>{SCRIPT}</script>",
        csrf = escape_html(&admin.csrf),
    );
    SITE.page("Dashboard", &body)
}

#[get("/dashboard/login")]
pub async fn login_form() -> HttpResponse {
    SITE.login_form()
}

#[post("/dashboard/login")]
pub async fn login(
    req: HttpRequest,
    form: web::Form<BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    SITE.login(&req, &form)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(dashboard).service(login_form).service(login);
}

/// Renders the sections from the JSON API (text through `textContent` or escaped: nothing from
/// a service or a system is ever read as HTML).
const SCRIPT: &str = r##"
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const when = t => t ? new Date(t).toLocaleString() : '—';
async function api(path, options) {
  const r = await fetch(path, Object.assign({credentials: 'same-origin', headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'}}, options || {}));
  if (r.status === 401) { location.href = '/dashboard/login'; throw new Error('logged out'); }
  return r;
}
function chart(points) {
  const hours = []; const now = Date.now();
  for (let i = 23; i >= 0; i--) hours.push(Math.floor((now - i * 3600e3) / 3600e3));
  const by = {}; (points || []).forEach(p => by[Math.floor(new Date(p.hour).getTime() / 3600e3)] = p);
  const max = Math.max(1, ...hours.map(h => (by[h] ? by[h].synced + by[h].errors : 0)));
  const bars = hours.map((h, i) => {
    const p = by[h] || {synced: 0, errors: 0};
    const s = 24 * p.synced / max, e = 24 * p.errors / max;
    return `<rect x="${i * 5}" y="${24 - s - e}" width="4" height="${s}" fill="#90a4ae"/>` +
           `<rect x="${i * 5}" y="${24 - e}" width="4" height="${e}" fill="#c62828"/>`;
  }).join('');
  return `<svg class="chart" width="120" height="24" role="img" aria-label="last 24 hours">${bars}</svg>`;
}
function rows(id, items, render, empty) {
  const body = document.querySelector(`#${id} tbody`);
  body.innerHTML = items.length ? items.map(render).join('') : `<tr><td colspan="12" class="muted">${empty}</td></tr>`;
}
async function refresh() {
  const h = await (await api('/api/health')).json();
  const overall = document.getElementById('overall');
  overall.textContent = h.status; overall.className = 'badge ' + h.status;
  document.getElementById('checked-at').textContent = when(h.checked_at);
  document.getElementById('issues').innerHTML = (h.issues || []).map(i => `<li>${esc(i.message)}</li>`).join('');
  rows('integrations', h.integrations || [], i => {
    const total = i.synced_1h + i.error_count_1h;
    const rate = total ? (100 * i.error_count_1h / total).toFixed(1) + ' %' : '—';
    return `<tr data-integration="${esc(i.name)}"><td>${esc(i.name)}</td><td><span class="badge ${esc(i.status)}">${esc(i.status)}</span></td>` +
      `<td>${when(i.last_sync)}</td><td class="num">${i.lag_minutes ?? '—'} / ${i.max_lag_minutes}</td>` +
      `<td class="num">${i.synced_1h}</td><td class="num">${i.error_count_1h}</td><td class="num">${rate}</td>` +
      `<td class="num">${i.queue_depth}</td><td class="num">${i.dead_letters}</td><td class="num">${i.ledger_open}</td>` +
      `<td class="num">${i.pending_conflicts + i.escalated_conflicts}</td><td>${chart(i.history)}</td></tr>`;
  }, 'no integrations');
  rows('conflicts', h.conflicts || [], c => `<tr><td>${esc(c.system)}</td><td>${esc(c.entity)}</td><td>${esc(c.external_id || c.record_id)}</td>` +
    `<td>${esc(c.status)}</td><td>${when(c.updated_at)}</td><td><a href="${esc(c.review_url)}">Review</a></td></tr>`, 'no open conflicts');
  rows('dead-letters', h.dead_letters || [], d => `<tr><td>${esc(d.integration)}</td><td>${esc(d.service)}</td><td>${esc(d.consumer)}</td>` +
    `<td>${esc(d.error)}</td><td>${when(d.at)}</td><td><button data-replay="${esc(d.dead_letter_id)}">Replay</button></td></tr>`, 'no dead letters');
  rows('bulk-jobs', h.bulk_jobs || [], b => {
    const pct = b.total_records ? Math.round(100 * b.processed_records / b.total_records) : (b.status === 'completed' ? 100 : 0);
    return `<tr><td>${esc(b.job_id)}</td><td>${esc(b.source)} → ${esc(b.target)}</td><td>${esc(b.entity)}</td><td>${esc(b.status)}</td>` +
      `<td><progress max="100" value="${pct}"></progress> ${pct} %</td><td class="num">${b.error_count}</td></tr>`;
  }, 'no bulk jobs');
  const select = document.getElementById('setting-key');
  if (!select.options.length) {
    Object.keys(h.settings || {}).forEach(k => select.add(new Option(k, k)));
    select.onchange = () => document.getElementById('setting-value').value = JSON.stringify(window.currentSettings[select.value]);
  }
  window.currentSettings = h.settings || {};
  if (!document.getElementById('setting-value').value) select.onchange();
  const ledgers = await (await api('/api/record-errors')).json();
  const ledgerRows = [];
  Object.entries(ledgers).forEach(([service, l]) => (l.errors || []).forEach(e => ledgerRows.push([service, e])));
  rows('record-errors', ledgerRows, ([s, e]) => `<tr><td>${esc(s)}</td><td>${esc(e.system)}</td><td>${esc(e.record_id || e.external_id)}</td>` +
    `<td>${esc(e.error)}</td><td class="num">${esc(e.attempts)}</td><td>` +
    ['retry', 'requeue', 'ignore'].map(a => `<button data-ledger="${esc(s)}/${esc(e.id)}/${a}">${a[0].toUpperCase() + a.slice(1)}</button>`).join(' ') + `</td></tr>`,
    'no open error-ledger rows');
  const audit = await (await api('/api/settings/audit')).json();
  rows('audit', audit, a => `<tr><td>${when(a.at)}</td><td>${esc(a.who)}</td><td>${esc(a.service ?? '')}</td><td>${esc(a.key)}</td>` +
    `<td><code>${esc(JSON.stringify(a.old_value))}</code></td><td><code>${esc(JSON.stringify(a.new_value))}</code></td></tr>`, 'no changes yet');
}
document.addEventListener('click', async ev => {
  const t = ev.target;
  if (t.id === 'check-now') { await api('/api/health/check', {method: 'POST'}); }
  else if (t.dataset.replay) { await api(`/api/dead-letters/${t.dataset.replay}/replay`, {method: 'POST'}); }
  else if (t.dataset.ledger) { await api(`/api/record-errors/${t.dataset.ledger}`, {method: 'POST'}); }
  else return;
  refresh();
});
document.getElementById('setting-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  const key = document.getElementById('setting-key').value;
  const r = await api(`/api/settings/${encodeURIComponent(key)}`, {method: 'PUT', body: document.getElementById('setting-value').value});
  const out = document.getElementById('setting-result');
  out.textContent = r.ok ? 'Saved.' : ((await r.json()).detail || 'Refused.');
  refresh();
});
document.getElementById('record-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  const id = document.getElementById('record-id').value.trim();
  if (!id) return;
  const out = document.getElementById('record-result');
  const r = await api(`/api/records/${encodeURIComponent(id)}`);
  const t = await r.json();
  if (!r.ok) { out.textContent = t.detail || 'Refused.'; return; }
  const verdict = t.stuck
    ? `<p id="record-verdict" class="badge unhealthy">stuck</p><ul>${t.why.map(w => `<li>${esc(w)}</li>`).join('')}</ul>`
    : `<p id="record-verdict" class="badge ${t.trail.length ? 'healthy' : 'idle'}">${t.trail.length ? 'not stuck' : 'not found'}</p>`;
  out.innerHTML = verdict + `<table id="record-trail"><thead><tr><th>When</th><th>What</th><th>System</th><th>Service</th>` +
    `<th>Record</th><th>Status</th><th>Detail</th></tr></thead><tbody>` +
    t.trail.map(e => `<tr><td>${when(e.at)}</td><td>${esc(e.kind)}</td><td>${esc(e.system)}</td><td>${esc(e.service)}</td>` +
      `<td>${esc(e.what)}</td><td>${esc(e.status)}</td><td>${e.kind === 'conflict' ? `<a href="${esc(e.link)}">Review</a>` : esc(e.detail)}</td></tr>`).join('') +
    `</tbody></table>` + (t.unreachable.length ? `<p class="muted">Not reachable: ${esc(t.unreachable.join('; '))}</p>` : '');
});
refresh(); setInterval(refresh, 15000);
"##;
