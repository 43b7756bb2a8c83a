/*
 * Sandbox Grafana page (see sidecar_sandbox/grafana.py). Emulates what a capture sees of
 * Grafana >= 11: panels built by script, data fetched with POST /api/ds/query, a loading
 * spinner until the data arrives, then a real SVG time series chart.
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

  var cfg = window.__sandboxConfig;
  var SERIES_COLOR = '#73BF69';
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var zone = resolveZone(cfg.tz);
  var tracker = { started: 0, rendered: 0 };
  var requestSeq = 0;
  var lazyCallbacks = new Map();
  var observer = new IntersectionObserver(onIntersect);

  if (cfg.scenes) {
    window.__grafanaSceneContext = {};
  }

  // ------------------------------------------------------------------ DOM helpers

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return node;
  }

  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setAttrs(node, attrs) {
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
  }

  // ------------------------------------------------------------------ time

  function resolveZone(tz) {
    if (!tz || tz === 'browser') return undefined;
    if (tz.toLowerCase() === 'utc') return 'UTC';
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: tz });
      return tz;
    } catch (e) {
      return undefined;
    }
  }

  var UNIT_MS = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5, M: 30 * 864e5, y: 365 * 864e5 };

  function parseTime(raw, now) {
    var text = String(raw).trim();
    if (/^\d+$/.test(text)) return Number(text);
    var m = /^now(?:-(\d+)([smhdwMy]))?$/.exec(text);
    if (m) return now - (m[1] ? Number(m[1]) * UNIT_MS[m[2]] : 0);
    var parsed = Date.parse(text);
    return isNaN(parsed) ? now : parsed;
  }

  function resolveRange() {
    var now = Date.now();
    return { from: parseTime(cfg.from, now), to: parseTime(cfg.to, now) };
  }

  function zoneOffsetMs(t) {
    var parts = {};
    new Intl.DateTimeFormat('en-US', {
      timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit'
    }).formatToParts(new Date(t)).forEach(function (p) { parts[p.type] = p.value; });
    var asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    return asUtc - Math.floor(t / 1000) * 1000;
  }

  function timeFormatter(stepMs, spanMs) {
    var opts = { timeZone: zone, hourCycle: 'h23' };
    if (stepMs < 864e5) { opts.hour = '2-digit'; opts.minute = '2-digit'; }
    if (stepMs < 6e4) opts.second = '2-digit';
    if (spanMs > 864e5) { opts.month = '2-digit'; opts.day = '2-digit'; }
    var fmt = new Intl.DateTimeFormat('en-US', opts);
    return function (t) {
      var p = {};
      fmt.formatToParts(new Date(t)).forEach(function (part) { p[part.type] = part.value; });
      var clock = p.hour !== undefined ? p.hour + ':' + p.minute + (p.second !== undefined ? ':' + p.second : '') : '';
      var date = p.month !== undefined ? p.month + '/' + p.day : '';
      return (date + ' ' + clock).trim();
    };
  }

  var TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
    21600, 43200, 86400, 172800, 604800, 2592000].map(function (s) { return s * 1000; });

  function timeTicks(from, to, maxTicks) {
    var step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) {
      if ((to - from) / TIME_STEPS[i] <= maxTicks) { step = TIME_STEPS[i]; break; }
    }
    var offset = zoneOffsetMs(from);
    var ticks = [];
    for (var t = Math.ceil((from + offset) / step) * step - offset; t <= to; t += step) ticks.push(t);
    return { step: step, ticks: ticks };
  }

  // ------------------------------------------------------------------ numbers

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    var pow = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / pow;
    var nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
    return nice * pow;
  }

  function valueTicks(values) {
    var lo = Math.min.apply(null, values);
    var hi = Math.max.apply(null, values);
    if (hi - lo < 1e-9) { hi = lo + 1; lo = Math.max(0, lo - 1); }
    var step = niceStep((hi - lo) / 4);
    var min = Math.floor(lo / step) * step;
    var max = Math.ceil(hi / step) * step;
    var decimals = step >= 1 ? 0 : Math.ceil(-Math.log10(step) - 1e-9);
    var ticks = [];
    for (var v = min; v <= max + step / 2; v += step) ticks.push(Number(v.toFixed(decimals)));
    return { min: min, max: max, ticks: ticks, decimals: decimals };
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
      panels: tracker.rendered
    });
    try {
      if (!navigator.sendBeacon('/_sandbox/rendered', payload)) {
        fetch('/_sandbox/rendered', { method: 'POST', body: payload, keepalive: true });
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
    fetch('/api/ds/query?ds_type=prometheus&requestId=SQR' + requestSeq, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
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
    view.loading = el('div', { 'class': 'panel-loading', 'aria-label': 'Panel loading bar' }, [
      el('div', { 'class': 'panel-loading__bar' }),
      el('div', { 'class': 'panel-loading__spinner' }),
      el('span', { 'class': 'panel-loading__text' }, ['Loading'])
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
      drawTimeseries(view.content, series, range);
    } else {
      view.content.appendChild(el('div', {
        'class': 'panel-empty', 'data-testid': 'data-testid Panel data error message'
      }, ['No data']));
    }
    view.section.dataset.sandboxState = data.error ? 'error' : series.length ? 'done' : 'nodata';
    panelRendered();
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

  // ------------------------------------------------------------------ chart

  function drawTimeseries(content, series, range) {
    var legend = el('div', { 'class': 'viz-legend', 'aria-label': 'Legend section' }, series.map(function (s) {
      return el('div', { 'class': 'viz-legend-item', 'data-testid': 'data-testid VizLegend series ' + s.name }, [
        el('span', { 'class': 'viz-legend-icon', style: 'background:' + SERIES_COLOR }),
        el('span', { 'class': 'viz-legend-label' }, [s.name])
      ]);
    }));
    var viz = el('div', { 'class': 'panel-viz', 'aria-label': 'Graph container' });
    content.appendChild(viz);
    content.appendChild(legend);
    var width = Math.max(viz.clientWidth, 50);
    var height = Math.max(viz.clientHeight, 40);
    var all = [];
    series.forEach(function (s) { all = all.concat(s.values); });
    var y = valueTicks(all);
    var labelWidth = Math.max.apply(null, y.ticks.map(function (v) { return v.toFixed(y.decimals).length; })) * 7 + 10;
    var box = { left: labelWidth, right: width - 8, top: 8, bottom: height - 22 };
    var svg = svgEl('svg', { width: width, height: height, viewBox: '0 0 ' + width + ' ' + height, 'class': 'sandbox-chart' });
    var px = function (t) { return box.left + (t - range.from) / (range.to - range.from) * (box.right - box.left); };
    var py = function (v) { return box.bottom - (v - y.min) / (y.max - y.min) * (box.bottom - box.top); };
    drawValueAxis(svg, y, box, py);
    drawTimeAxis(svg, range, box, px);
    series.forEach(function (s) { drawSeries(svg, s, px, py, box); });
    viz.appendChild(svg);
  }

  function drawValueAxis(svg, y, box, py) {
    y.ticks.forEach(function (v) {
      var yy = Math.round(py(v)) + 0.5;
      svg.appendChild(svgEl('line', { x1: box.left, x2: box.right, y1: yy, y2: yy, stroke: 'var(--grid)' }));
      svg.appendChild(svgEl('text', { x: box.left - 6, y: yy + 4, 'text-anchor': 'end', 'class': 'y-tick' }, v.toFixed(y.decimals)));
    });
  }

  function drawTimeAxis(svg, range, box, px) {
    var maxTicks = Math.max(2, Math.floor((box.right - box.left) / 90));
    var t = timeTicks(range.from, range.to, maxTicks);
    var fmt = timeFormatter(t.step, range.to - range.from);
    t.ticks.forEach(function (tick) {
      var xx = Math.round(px(tick)) + 0.5;
      svg.appendChild(svgEl('line', { x1: xx, x2: xx, y1: box.top, y2: box.bottom, stroke: 'var(--grid)' }));
      svg.appendChild(svgEl('text', {
        x: xx, y: box.bottom + 16, 'text-anchor': 'middle', 'class': 'x-tick', 'data-time': tick
      }, fmt(tick)));
    });
  }

  function drawSeries(svg, s, px, py, box) {
    var points = [];
    for (var i = 0; i < s.times.length; i++) {
      if (s.values[i] === null || s.values[i] === undefined) continue;
      points.push(px(s.times[i]).toFixed(1) + ',' + py(s.values[i]).toFixed(1));
    }
    if (!points.length) return;
    var line = 'M' + points.join('L');
    var first = points[0].split(',')[0];
    var last = points[points.length - 1].split(',')[0];
    svg.appendChild(svgEl('path', {
      d: line + 'L' + last + ',' + box.bottom + 'L' + first + ',' + box.bottom + 'Z',
      fill: SERIES_COLOR, 'fill-opacity': 0.15, stroke: 'none'
    }));
    svg.appendChild(svgEl('path', {
      d: line, fill: 'none', stroke: SERIES_COLOR, 'stroke-width': 2,
      'stroke-linejoin': 'round', 'stroke-linecap': 'round', 'class': 'series-line'
    }));
  }

  // ------------------------------------------------------------------ pages

  function bootSolo(root) {
    document.body.classList.add('solo');
    var solo = el('div', { 'class': 'panel-solo' });
    root.appendChild(solo);
    if (!cfg.panels.length) {
      solo.appendChild(el('div', {
        'class': 'panel-not-found', role: 'alert', 'data-testid': 'data-testid Alert error'
      }, [el('div', { 'class': 'alert-title' }, ['Panel not found'])]));
      return;
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

  var root = document.getElementById('reactRoot');
  if (cfg.mode === 'solo') bootSolo(root); else bootDashboard(root);
})();
