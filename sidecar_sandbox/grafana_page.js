/*
 * Sandbox Grafana page, part 2 of 2 (see sidecar_sandbox/grafana_page.py). Emulates what a
 * capture sees of Grafana >= 11: panels built by script, data fetched with POST /api/ds/query, a
 * loading spinner until the data arrives, then a real SVG time series chart (drawn by
 * grafana_page_chart.js, loaded first: window.__sandboxChart).
 *
 * Readiness signals, as in Grafana:
 *   Scenes:  window.__grafanaSceneContext is set; window.__grafanaRunningQueryCount is
 *            undefined until the first query starts, +1 when a query starts, -1 when it
 *            finishes (SceneQueryController). The chart is drawn one animation frame later.
 *   Legacy:  window.panelsRendered is incremented after each panel is drawn.
 *   Sandbox: window.__sandboxReadyAt = Date.now() once every started panel is drawn, plus a
 *            beacon to /_sandbox/rendered.
 */
(function () {
  'use strict';

  var chart = window.__sandboxChart;
  var el = chart.el;
  var cfg = window.__sandboxConfig;
  var texts = cfg.texts || {};
  var sub = cfg.appSubUrl || '';
  var zone = chart.resolveZone(cfg.tz);
  var tracker = { started: 0, rendered: 0 };
  var requestSeq = 0;
  var lazyCallbacks = new Map();
  var observer = new IntersectionObserver(onIntersect);

  if (cfg.scenes) {
    window.__grafanaSceneContext = {};
  }

  function resolveRange() {
    var now = Date.now();
    return { from: chart.parseTime(cfg.from, now), to: chart.parseTime(cfg.to, now) };
  }

  // ------------------------------------------------------------------ readiness

  function changeRunningQueryCount(dir) {
    window.__grafanaRunningQueryCount = (window.__grafanaRunningQueryCount || 0) + dir;
  }

  function panelRendered() {
    tracker.rendered += 1;
    if (!cfg.scenes) window.panelsRendered = (window.panelsRendered || 0) + 1;
    if (tracker.rendered === tracker.started) markReady();
  }

  function markReady() {
    var readyAt = Date.now();
    window.__sandboxReadyAt = readyAt;
    var payload = JSON.stringify({
      url: location.href, navigation_start: performance.timeOrigin, ready_at: readyAt,
      panels: tracker.rendered, logo: !!document.querySelector('.solo-logo'), org: cfg.orgId
    });
    try {
      if (!navigator.sendBeacon(sub + '/_sandbox/rendered', payload)) {
        fetch(sub + '/_sandbox/rendered', { method: 'POST', body: payload, keepalive: true });
      }
    } catch (e) { /* the beacon is only for benchmarks */ }
  }

  // ------------------------------------------------------------------ lazy loading

  function lazy(node, callback) {
    lazyCallbacks.set(node, callback);
    observer.observe(node);
  }

  function onIntersect(entries) {
    entries.forEach(function (entry) {
      if (!entry.isIntersecting || !lazyCallbacks.has(entry.target)) return;
      var callback = lazyCallbacks.get(entry.target);
      lazyCallbacks.delete(entry.target);
      observer.unobserve(entry.target);
      callback();
    });
  }

  // ------------------------------------------------------------------ panels

  function mountPanel(host, panel) {
    var attrs = {
      'class': 'panel-container',
      'data-testid': 'data-testid Panel header ' + panel.title,
      'aria-label': panel.title + ' panel'
    };
    attrs[cfg.scenes ? 'data-viz-panel-key' : 'data-panelid'] = cfg.scenes ? 'panel-' + panel.id : panel.id;
    var title = el('h2', { 'class': 'panel-title', title: panel.title }, [panel.title]);
    var header = el('div', { 'class': 'panel-header', 'data-testid': 'header-container' }, [title]);
    var content = el('div', { 'class': 'css-sbx1 panel-content', 'data-testid': 'data-testid panel content' });
    var section = el('section', attrs, [header, content]);
    section.dataset.sandboxState = 'idle';
    host.appendChild(section);
    var view = { panel: panel, section: section, header: header, content: content, loading: null };
    lazy(section, function () { runQuery(view); });
  }

  function runQuery(view) {
    tracker.started += 1;
    if (cfg.scenes) changeRunningQueryCount(1);
    showLoading(view);
    var completed = false;
    var range = resolveRange();
    var query = {
      refId: 'A',
      datasource: { type: 'prometheus', uid: 'sandbox-prometheus' },
      expr: view.panel.targets[0].expr,
      panelId: view.panel.id,
      dashboardUid: cfg.dashboard.uid,
      maxDataPoints: Math.max(100, Math.round(view.content.clientWidth)),
      vars: cfg.vars
    };
    if (cfg.delayMs !== null) query.sandboxDelayMs = cfg.delayMs;
    requestSeq += 1;
    // backend_srv.ts sends the org of the page with every API request
    fetch(sub + '/api/ds/query?ds_type=prometheus&requestId=SQR' + requestSeq, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json', 'X-Grafana-Org-Id': String(cfg.orgId) },
      body: JSON.stringify({ queries: [query], from: String(range.from), to: String(range.to) })
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (body) {
        return toPanelData(resp.status, body);
      });
    }).catch(function (err) {
      return { error: 'Network error: ' + err.message };
    }).then(function (data) {
      if (!completed) {
        completed = true;
        if (cfg.scenes) changeRunningQueryCount(-1);
      }
      requestAnimationFrame(function () { renderPanel(view, data, range); });
    });
  }

  function toPanelData(status, body) {
    var result = body && body.results && body.results.A;
    if (!result) return { error: (body && body.message) || 'HTTP ' + status };
    if (result.error) return { error: result.error };
    return { frames: result.frames || [] };
  }

  function showLoading(view) {
    view.section.dataset.sandboxState = 'loading';
    view.loading = el('div', { 'class': 'css-loading-bar', 'aria-label': texts.loading }, [
      el('div', { 'class': 'css-loading-bar__bar' }),
      el('div', { 'class': 'css-loading-bar__spinner' }),
      el('span', { 'class': 'css-loading-bar__text' }, [''])
    ]);
    view.section.appendChild(view.loading);
  }

  function renderPanel(view, data, range) {
    if (view.loading) view.loading.remove();
    view.loading = null;
    view.content.textContent = '';
    var series = framesToSeries(data.frames || []);
    if (data.error) showError(view, data.error);
    if (series.length) {
      chart.drawTimeseries(view.content, series, range, zone);
    } else {
      view.content.appendChild(el('div', {
        'class': 'panel-empty', 'data-testid': 'data-testid Panel data error message'
      }, [texts.noData]));
    }
    view.section.dataset.sandboxState = data.error ? 'error' : series.length ? 'done' : 'nodata';
    panelRendered();
    if (view.panel.behaviour === 'live' && series.length) startClock(view);
  }

  // a live panel (a clock, a Grafana Live stream) keeps redrawing after its query is done
  function startClock(view) {
    var clock = el('div', { 'class': 'live-clock' }, ['']);
    view.content.appendChild(clock);
    var tick = function () { clock.textContent = new Date().toISOString().slice(11, 23); };
    tick();
    setInterval(tick, 40);
  }

  function showError(view, message) {
    var corner = el('div', {
      'class': 'panel-info-corner panel-info-corner--error',
      'data-testid': 'data-testid Panel status error',
      role: 'button', 'aria-label': 'status', title: message
    }, ['!', el('span', { 'class': 'sr-only panel-info-corner__message' }, [message])]);
    view.header.insertBefore(corner, view.header.firstChild);
  }

  function framesToSeries(frames) {
    var series = [];
    frames.forEach(function (frame) {
      var fields = (frame.schema && frame.schema.fields) || [];
      var values = (frame.data && frame.data.values) || [];
      if (fields.length < 2 || !values[0] || !values[0].length) return;
      var field = fields[1];
      var name = (field.config && field.config.displayNameFromDS) || field.name || 'Value';
      series.push({ name: name, times: values[0], values: values[1] });
    });
    return series;
  }

  // ------------------------------------------------------------------ pages

  function bootSolo(root) {
    document.body.classList.add('solo');
    var solo = el('div', { 'class': 'panel-solo' });
    root.appendChild(solo);
    if (!cfg.panels.length) {
      // Scenes: useSoloPanel's 'Panel not found' (translated); legacy SoloPanelPage:
      // "Panel with id {parseInt(panelId)} not found" (NaN for a key)
      var id = parseInt(cfg.panelIdRaw, 10);
      var message = cfg.scenes ? texts.notFound : 'Panel with id ' + (isNaN(id) ? 'NaN' : id) + ' not found';
      solo.appendChild(el('div', {
        'class': 'panel-not-found', role: 'alert', 'data-testid': 'data-testid Alert error'
      }, [el('div', { 'class': 'alert-title' }, [message])]));
      return;
    }
    if (cfg.soloLogo) {
      // 12.4 SoloPanelPageLogo: "Powered by" + the Grafana logo, unless hideLogo=true
      solo.appendChild(el('div', { 'class': 'solo-logo' }, [
        el('span', {}, [texts.poweredBy]), el('span', { 'class': 'solo-logo__mark' }, ['Grafana'])
      ]));
    }
    mountPanel(solo, cfg.panels[0]);
  }

  function bootDashboard(root) {
    var page = el('div', { 'class': 'dashboard-page' + (cfg.kiosk ? ' dashboard-page--kiosk' : '') });
    if (!cfg.kiosk) page.appendChild(el('h1', { 'class': 'dashboard-title' }, [cfg.dashboard.title]));
    var grid = el('div', { 'class': 'react-grid-layout' });
    var bottom = 0;
    cfg.panels.forEach(function (panel) {
      var g = panel.gridPos;
      var style = 'left:calc(' + (g.x / 24 * 100) + '% + 0px);width:calc(' + (g.w / 24 * 100) + '% - 8px);' +
        'top:' + g.y * 38 + 'px;height:' + (g.h * 38 - 8) + 'px';
      var item = el('div', { 'class': 'react-grid-item', style: style });
      grid.appendChild(item);
      bottom = Math.max(bottom, (g.y + g.h) * 38);
      mountPanel(item, panel);
    });
    grid.style.height = bottom + 'px';
    page.appendChild(grid);
    root.appendChild(page);
  }

  function boot() {
    document.querySelector('.preloader').classList.add('preloader--done');
    var root = document.getElementById('reactRoot');
    if (cfg.mode === 'solo') bootSolo(root); else bootDashboard(root);
  }

  if (cfg.apis) {
    // 12.x: the dashboard comes from the app platform API (public/app/features/dashboard/api/v1.ts)
    var ns = cfg.orgId === 1 ? 'default' : 'org-' + cfg.orgId;
    var version = cfg.dashboard.v2 ? 'v2beta1' : 'v1beta1';
    fetch(sub + '/apis/dashboard.grafana.app/' + version + '/namespaces/' + ns + '/dashboards/' +
      encodeURIComponent(cfg.dashboard.uid) + '/dto', {
      credentials: 'same-origin', headers: { 'Accept': 'application/json', 'X-Grafana-Org-Id': String(cfg.orgId) }
    }).then(function (resp) {
      if (resp.ok) { boot(); return; }
      document.querySelector('.preloader').classList.add('preloader--done');
      document.getElementById('reactRoot').appendChild(el('div', {
        'class': 'panel-not-found', role: 'alert', 'data-testid': 'data-testid Alert error'
      }, [el('div', { 'class': 'alert-title' }, ['HTTP ' + resp.status])]));
    });
  } else {
    boot();
  }
})();
