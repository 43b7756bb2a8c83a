/*
 * Sandbox Grafana page, part 1 of 2: DOM helpers, time parsing and the time series chart (see
 * sidecar_sandbox/grafana_page.py). Loaded before grafana_page.js, which uses it through
 * window.__sandboxChart.
 *
 * The chart is a real SVG drawing, like Grafana's: value axis with "nice" steps (1, 2, 2.5, 5 ×
 * 10^n), time axis with Grafana-like steps (1 s … 30 d) aligned in the dashboard's time zone
 * (cfg.tz: an IANA name, "utc", or "browser"/unset for the browser's), filled series line,
 * legend. Times on the axis are formatted with Intl in that zone (each tick carries data-time).
 */
(function () {
  'use strict';

  var SERIES_COLOR = '#73BF69';
  var SVG_NS = 'http://www.w3.org/2000/svg';

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

  function zoneOffsetMs(t, zone) {
    var parts = {};
    new Intl.DateTimeFormat('en-US', {
      timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit'
    }).formatToParts(new Date(t)).forEach(function (p) { parts[p.type] = p.value; });
    var asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    return asUtc - Math.floor(t / 1000) * 1000;
  }

  function timeFormatter(stepMs, spanMs, zone) {
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

  function timeTicks(from, to, maxTicks, zone) {
    var step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) {
      if ((to - from) / TIME_STEPS[i] <= maxTicks) { step = TIME_STEPS[i]; break; }
    }
    var offset = zoneOffsetMs(from, zone);
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

  // ------------------------------------------------------------------ chart

  function drawTimeseries(content, series, range, zone) {
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
    drawTimeAxis(svg, range, box, px, zone);
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

  function drawTimeAxis(svg, range, box, px, zone) {
    var maxTicks = Math.max(2, Math.floor((box.right - box.left) / 90));
    var t = timeTicks(range.from, range.to, maxTicks, zone);
    var fmt = timeFormatter(t.step, range.to - range.from, zone);
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

  window.__sandboxChart = {
    el: el, resolveZone: resolveZone, parseTime: parseTime, drawTimeseries: drawTimeseries
  };
})();
