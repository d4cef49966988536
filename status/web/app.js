// txstream dashboard: polls the JSON API and updates the page in place.
// No dependencies; charts are inline SVG drawn here.
(function () {
  'use strict';

  var REFRESH_MS = 1500;
  var MAX_SNAP_BARS = 80;
  var C = {
    in: '#58a6ff', out: '#3fb950', lag: '#e3b341', dur: '#a371f7', pause: '#39c5cf',
    fail: '#f85149', written: '#58a6ff', total: '#e3b341'
  };
  var STATE_COLOR = {
    CREATED: '#58a6ff', RUNNING: '#3fb950', RESTARTING: '#e3b341',
    FAILED: '#f85149', FINISHED: '#a371f7', CANCELED: '#8b949e'
  };
  var TERMINAL = { FAILED: 1, FINISHED: 1, CANCELED: 1 };

  var samples = [];
  var lastT = 0;
  var capacity = 600;
  var job = null;
  var ckpts = null;
  var skew = 0; // server clock - local clock, ms

  function $(id) { return document.getElementById(id); }
  function setText(el, s) { if (el && el.textContent !== s) el.textContent = s; }
  function setHTML(el, s) { if (el && el._html !== s) { el.innerHTML = s; el._html = s; } }
  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function now() { return Date.now() + skew; }

  // ---- formatting ----
  function fmtInt(n) { return Math.round(n).toLocaleString('en-US'); }
  function fmtCompact(n) {
    var a = Math.abs(n);
    if (a < 10000) return fmtInt(n);
    var u = [[1e12, 'T'], [1e9, 'B'], [1e6, 'M'], [1e3, 'k']];
    for (var i = 0; i < u.length; i++) {
      if (a >= u[i][0]) {
        var v = n / u[i][0];
        return (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1)) + u[i][1];
      }
    }
    return fmtInt(n);
  }
  function fmtBytes(b) {
    if (b == null) return '–';
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (Math.abs(b) >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b.toFixed(0) : b >= 100 ? b.toFixed(0) : b.toFixed(1)) + ' ' + u[i];
  }
  function fmtMs(ms) {
    if (ms == null) return '–';
    if (ms < 1) return ms.toFixed(2) + ' ms';
    if (ms < 10) return ms.toFixed(1) + ' ms';
    if (ms < 1000) return ms.toFixed(0) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    return fmtAge(ms / 1000);
  }
  function fmtAge(sec) {
    sec = Math.max(0, Math.floor(sec));
    if (sec < 60) return sec + 's';
    var m = Math.floor(sec / 60), s = sec % 60;
    if (m < 60) return m + 'm ' + s + 's';
    var h = Math.floor(m / 60);
    if (h < 24) return h + 'h ' + (m % 60) + 'm';
    return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
  }
  function pad(n) { return n < 10 ? '0' + n : '' + n; }
  function fmtClock(t) { var d = new Date(t); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
  // shortID turns "00000000000000007293-20261121T104844.989359636Z-fbee4d"
  // into "7293…fbee4d" (offset and random suffix); the full id is the title.
  function shortID(id) {
    var m = /^0*(\d+)-[0-9T.Z]+-([0-9a-f]+)$/.exec(id || '');
    return m ? m[1] + '…' + m[2] : (id || '–');
  }
  function fmtStamp(t) {
    var d = new Date(t);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + fmtClock(t);
  }
  function fmtRate(r) { return (r >= 100 ? fmtCompact(r) : r.toFixed(r >= 10 ? 0 : 1)) + '/s'; }

  // ---- scales and ticks ----
  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  }
  function yTicks(max, count, bytes) {
    if (!(max > 0)) max = 1;
    var step;
    if (bytes) {
      var p = Math.pow(1024, Math.floor(Math.log(max) / Math.log(1024)));
      step = niceStep(max / p, count) * p;
    } else {
      step = niceStep(max, count);
      if (step < 1 && max >= 1) step = 1;
    }
    var top = Math.ceil(max / step) * step;
    var ticks = [];
    for (var v = 0; v <= top + step / 2; v += step) ticks.push(v);
    return { ticks: ticks, top: top };
  }
  var TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  function timeTicks(t0, t1, count) {
    var span = (t1 - t0) / 1000;
    var step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) { if (span / TIME_STEPS[i] <= count) { step = TIME_STEPS[i]; break; } }
    step *= 1000;
    var out = [];
    for (var t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
    return out;
  }

  // ---- SVG helpers ----
  var NS = 'http://www.w3.org/2000/svg';
  function svgOpen(w, h) { return '<svg xmlns="' + NS + '" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + ' ' + h + '">'; }
  function r1(v) { return Math.round(v * 10) / 10; }

  function noData(el, msg) {
    el.dataset.points = '0';
    setHTML(el, '<div class="nodata">' + esc(msg) + '</div>');
  }

  // Time-series chart: series [{name, color, area, pts:[[t, v], ...]}].
  function timeChart(el, series, yFmt, bands) {
    var w = el.clientWidth, h = el.clientHeight;
    var n = series[0].pts.length;
    if (n < 2 || w < 50) { noData(el, n < 2 ? 'Collecting samples…' : ''); el._chart = null; return; }
    var L = 56, R = 12, T = 10, B = 24;
    var pw = w - L - R, ph = h - T - B;
    var t0 = series[0].pts[0][0], t1 = series[0].pts[n - 1][0];
    if (t1 <= t0) t1 = t0 + 1000;
    var max = 0;
    series.forEach(function (s) { s.pts.forEach(function (p) { if (p[1] != null && p[1] > max) max = p[1]; }); });
    var yt = yTicks(max * 1.05, 4, false);
    var x = function (t) { return L + (t - t0) / (t1 - t0) * pw; };
    var y = function (v) { return T + ph - v / yt.top * ph; };
    var o = svgOpen(w, h) + '<defs>';
    series.forEach(function (s, i) {
      if (s.area) {
        o += '<linearGradient id="g-' + el.id + '-' + i + '" x1="0" y1="0" x2="0" y2="1">' +
          '<stop offset="0" stop-color="' + s.color + '" stop-opacity=".35"/><stop offset="1" stop-color="' + s.color + '" stop-opacity=".02"/></linearGradient>';
      }
    });
    o += '</defs>';
    yt.ticks.forEach(function (v) {
      var yy = r1(y(v));
      o += '<line class="gridline" x1="' + L + '" x2="' + (L + pw) + '" y1="' + yy + '" y2="' + yy + '"/>';
      o += '<text x="' + (L - 8) + '" y="' + (yy + 3.5) + '" text-anchor="end">' + esc(yFmt(v)) + '</text>';
    });
    timeTicks(t0, t1, Math.max(2, Math.floor(pw / 90))).forEach(function (t) {
      var xx = r1(x(t));
      o += '<line class="axis" x1="' + xx + '" x2="' + xx + '" y1="' + (T + ph) + '" y2="' + (T + ph + 4) + '"/>';
      o += '<text x="' + xx + '" y="' + (h - 6) + '" text-anchor="middle">' + fmtClock(t) + '</text>';
    });
    (bands || []).forEach(function (b) {
      var a = Math.max(L, x(b.a)), e = Math.min(L + pw, x(b.b));
      if (e - a < 0.5) return;
      o += '<rect x="' + r1(a) + '" y="' + T + '" width="' + r1(e - a) + '" height="' + ph + '" fill="' + (STATE_COLOR[b.s] || '#555') + '" opacity=".12">' +
        '<title>' + esc(b.s) + '</title></rect>';
    });
    o += '<line class="axis" x1="' + L + '" x2="' + (L + pw) + '" y1="' + (T + ph) + '" y2="' + (T + ph) + '"/>';
    series.forEach(function (s, i) {
      // Runs of known values; a null (unknown) breaks the line.
      var runs = [], run = [];
      s.pts.forEach(function (p) {
        if (p[1] == null) { if (run.length) runs.push(run); run = []; } else run.push(p);
      });
      if (run.length) runs.push(run);
      var d = '', area = '';
      runs.forEach(function (r) {
        var seg = '';
        r.forEach(function (p, j) { seg += (j ? 'L' : 'M') + r1(x(p[0])) + ',' + r1(y(p[1])); });
        d += seg;
        area += seg + 'L' + r1(x(r[r.length - 1][0])) + ',' + (T + ph) + 'L' + r1(x(r[0][0])) + ',' + (T + ph) + 'Z';
      });
      if (!d) return;
      if (s.area) o += '<path d="' + area + '" fill="url(#g-' + el.id + '-' + i + ')"/>';
      o += '<path class="line" d="' + d + '" fill="none" stroke="' + s.color + '" stroke-width="' + (s.dash ? '1.6' : '1.8') + '"' +
        (s.dash ? ' stroke-dasharray="' + s.dash + '"' : '') + ' stroke-linejoin="round" stroke-linecap="round"/>';
    });
    o += '<g class="hover"></g></svg>';
    el.innerHTML = o;
    el._html = null;
    el.dataset.points = String(n);
    setTimeout(function () { if (el._rehover) el._rehover(); }, 0);
    el._chart = {
      kind: 'time', L: L, pw: pw, T: T, ph: ph, x: x, y: y, series: series, yFmt: yFmt,
      pick: function (mx) {
        var t = t0 + (mx - L) / pw * (t1 - t0), best = 0, bd = Infinity;
        series[0].pts.forEach(function (p, j) { var dd = Math.abs(p[0] - t); if (dd < bd) { bd = dd; best = j; } });
        return best;
      }
    };
  }

  // Bar chart over snapshot index: items [{...}], bars [{get, color, width}],
  // optional line {get, color}; failed items drawn as a red stripe.
  function barChart(el, items, bars, line, yFmt, bytes, tip) {
    var w = el.clientWidth, h = el.clientHeight;
    var n = items.length;
    if (n === 0 || w < 50) { noData(el, 'No snapshots yet'); el._chart = null; return; }
    var L = 56, R = 12, T = 10, B = 24;
    var pw = w - L - R, ph = h - T - B;
    var max = 0;
    items.forEach(function (it) {
      bars.forEach(function (b) { max = Math.max(max, b.get(it) || 0); });
      if (line) max = Math.max(max, line.get(it) || 0);
    });
    var yt = yTicks(max * 1.08, 4, bytes);
    var slot = pw / n;
    var bw = Math.max(2, Math.min(18, slot * 0.62));
    var cx = function (i) { return L + slot * (i + 0.5); };
    var y = function (v) { return T + ph - v / yt.top * ph; };
    var o = svgOpen(w, h);
    yt.ticks.forEach(function (v) {
      var yy = r1(y(v));
      o += '<line class="gridline" x1="' + L + '" x2="' + (L + pw) + '" y1="' + yy + '" y2="' + yy + '"/>';
      o += '<text x="' + (L - 8) + '" y="' + (yy + 3.5) + '" text-anchor="end">' + esc(yFmt(v)) + '</text>';
    });
    var every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(pw / 90))));
    var lastLabel = '';
    items.forEach(function (it, i) {
      var xx = cx(i);
      if (it.status === 'failed') {
        o += '<rect x="' + r1(xx - bw / 2) + '" y="' + T + '" width="' + r1(bw) + '" height="' + ph + '" fill="' + C.fail + '" opacity=".22"/>';
        o += '<rect x="' + r1(xx - bw / 2) + '" y="' + (T + ph - 3) + '" width="' + r1(bw) + '" height="3" fill="' + C.fail + '"/>';
      } else {
        bars.forEach(function (b) {
          var v = b.get(it) || 0, bwi = bw * (b.width || 1);
          var top = y(v), hh = Math.max(v > 0 ? 1 : 0, T + ph - top);
          o += '<rect class="bar" x="' + r1(xx - bwi / 2) + '" y="' + r1(T + ph - hh) + '" width="' + r1(bwi) + '" height="' + r1(hh) + '" rx="1.5" fill="' + b.color + '"/>';
        });
      }
      var label = fmtClock(Date.parse(it.trigger_time));
      if ((n - 1 - i) % every === 0 && label !== lastLabel) {
        o += '<text x="' + r1(xx) + '" y="' + (h - 6) + '" text-anchor="middle">' + label + '</text>';
        lastLabel = label;
      }
    });
    if (line) {
      var d = '';
      items.forEach(function (it, i) { if (it.status !== 'failed') d += (d ? 'L' : 'M') + r1(cx(i)) + ',' + r1(y(line.get(it) || 0)); });
      if (d) o += '<path class="line" d="' + d + '" fill="none" stroke="' + line.color + '" stroke-width="1.8" stroke-linejoin="round"/>';
    }
    o += '<line class="axis" x1="' + L + '" x2="' + (L + pw) + '" y1="' + (T + ph) + '" y2="' + (T + ph) + '"/>';
    o += '<g class="hover"></g></svg>';
    el.innerHTML = o;
    el._html = null;
    el.dataset.points = String(n);
    setTimeout(function () { if (el._rehover) el._rehover(); }, 0);
    el._chart = {
      kind: 'bar', L: L, pw: pw, T: T, ph: ph, items: items, tip: tip, cx: cx,
      pick: function (mx) { return Math.max(0, Math.min(n - 1, Math.floor((mx - L) / slot))); }
    };
  }

  // Hover: crosshair and tooltip for every chart.
  function attachHover(el) {
    var tt = $('tooltip');
    el.addEventListener('mousemove', function (ev) {
      el._mouse = { clientX: ev.clientX, clientY: ev.clientY };
      hover(ev);
    });
    // A refresh redraws the chart: redraw the crosshair where the mouse is.
    el._rehover = function () { if (el._mouse) hover(el._mouse); };
    function hover(ev) {
      var ch = el._chart;
      if (!ch) return;
      var r = el.getBoundingClientRect();
      var mx = ev.clientX - r.left;
      if (mx < ch.L || mx > ch.L + ch.pw) { leave(); return; }
      var i = ch.pick(mx);
      var g = el.querySelector('g.hover');
      var html, xx, dots = '';
      if (ch.kind === 'time') {
        var p0 = ch.series[0].pts[i];
        xx = ch.x(p0[0]);
        html = '<div class="tt-h">' + fmtClock(p0[0]) + '</div>';
        ch.series.forEach(function (s) {
          var p = s.pts[i];
          if (p[1] == null) {
            html += '<div class="tt-r"><i style="background:' + s.color + '"></i>' + esc(s.name) + ': <b>unknown</b></div>';
            return;
          }
          dots += '<circle cx="' + r1(xx) + '" cy="' + r1(ch.y(p[1])) + '" r="3.5" fill="' + s.color + '" stroke="#0b0f14" stroke-width="1.5"/>';
          html += '<div class="tt-r"><i style="background:' + s.color + '"></i>' + esc(s.name) + ': <b>' + esc(ch.yFmt(p[1], true)) + '</b></div>';
        });
      } else {
        xx = ch.cx(i);
        html = ch.tip(ch.items[i]);
      }
      if (g) g.innerHTML = '<line class="cross" x1="' + r1(xx) + '" x2="' + r1(xx) + '" y1="' + ch.T + '" y2="' + (ch.T + ch.ph) + '"/>' + dots;
      tt.innerHTML = html;
      tt.hidden = false;
      var tx = ev.clientX + 14, ty = ev.clientY + 14;
      if (tx + tt.offsetWidth > window.innerWidth - 8) tx = ev.clientX - tt.offsetWidth - 14;
      if (ty + tt.offsetHeight > window.innerHeight - 8) ty = ev.clientY - tt.offsetHeight - 14;
      tt.style.left = tx + 'px';
      tt.style.top = ty + 'px';
    }
    function leave() {
      el._mouse = null;
      tt.hidden = true;
      var g = el.querySelector('g.hover');
      if (g) g.innerHTML = '';
    }
    el.addEventListener('mouseleave', leave);
  }

  // ---- sections ----
  function renderJob(j) {
    var badge = $('state');
    if (badge.dataset.state !== j.state) {
      badge.className = 'badge state-' + j.state;
      badge.dataset.state = j.state;
    }
    setText(badge, j.draining && !TERMINAL[j.state] ? j.state + ' · draining' : j.state);
    document.title = j.state + ' · txstream';
    setText($('attempt'), String(j.attempt));
    setText($('restarts'), String(j.restarts));
    var st = j.settings || {};
    setText($('flow'), (st.topic || '?') + ' → ' + (st.output_topic || '?') + (st.group ? '  ·  group ' + st.group : ''));
    setText($('version'), 'version ' + j.version);
    var f = j.last_failure;
    $('failure').hidden = !f;
    if (f) {
      setText($('failure-cause'), f.cause);
      setText($('failure-when'), '· attempt ' + f.attempt + ' · ' + fmtStamp(Date.parse(f.time)) +
        (j.state === 'RUNNING' ? ' · recovered' : ''));
      var fc = 'failure' + (j.state === 'RUNNING' || j.state === 'FINISHED' || j.state === 'CANCELED' ? ' recovered' : '');
      if ($('failure').className !== fc) $('failure').className = fc;
      var where = f.partition != null ? 'record ' + (f.topic || '') + '/' + f.partition + ' @ offset ' + f.offset : '';
      if (f.permanent) where += (where ? ' · ' : '') + 'permanent (no restart)';
      if (j.next_restart) where += (where ? ' · ' : '') + 'restart at ' + fmtClock(Date.parse(j.next_restart));
      setText($('failure-where'), where);
    }
    var dl = $('settings');
    var keys = ['group', 'topic', 'output_topic', 'dlq_topic', 'sink', 'commit_interval', 'checkpoint_interval', 'checkpoint_mode',
      'checkpoint_retain', 'checkpoint_dir', 'data_dir', 'dedup_window', 'instance_id', 'transactional_id'];
    var html = '';
    html += '<dt>restart strategy</dt><dd title="' + esc(j.restart_strategy) + '">' + esc(j.restart_strategy) + '</dd>';
    if (st.kafka && st.kafka.brokers) html += '<dt>brokers</dt><dd>' + esc([].concat(st.kafka.brokers).join(', ')) + '</dd>';
    keys.forEach(function (k) {
      if (st[k] === undefined || st[k] === '') return;
      html += '<dt>' + esc(k.replace(/_/g, ' ')) + '</dt><dd title="' + esc(st[k]) + '">' + esc(st[k]) + '</dd>';
    });
    setHTML(dl, html);
    $('btn-cancel').disabled = !!TERMINAL[j.state] || j.draining;
    $('btn-savepoint').disabled = j.state !== 'RUNNING';
  }

  function renderClock() {
    if (!job) return;
    var t = now();
    setText($('uptime'), fmtAge((t - Date.parse(job.started)) / 1000));
    setText($('in-state'), fmtAge((t - Date.parse(job.since)) / 1000));
    if (ckpts && ckpts.latest_completed) {
      setText($('k-ckpt'), fmtAge((t - Date.parse(ckpts.latest_completed.trigger_time)) / 1000) + ' ago');
    }
  }

  function avgRate(key, k) {
    var n = samples.length;
    if (n < 2) return null;
    var a = samples[Math.max(0, n - 1 - k)], b = samples[n - 1];
    var dt = (b.t - a.t) / 1000;
    return dt > 0 ? Math.max(0, (b[key] - a[key]) / dt) : 0;
  }

  function renderKPIs(p) {
    var t = p.totals;
    setText($('k-in'), fmtCompact(t.records_in)); $('k-in').title = fmtInt(t.records_in);
    setText($('k-out'), fmtCompact(t.records_out)); $('k-out').title = fmtInt(t.records_out);
    setText($('k-dlq'), fmtCompact(t.records_dlq)); $('k-dlq').title = fmtInt(t.records_dlq);
    var lagKnown = p.partitions.some(function (x) { return x.high_watermark > 0 || x.committed_offset === 0; });
    setText($('k-lag'), lagKnown ? fmtCompact(t.lag) : '–');
    $('k-lag').title = lagKnown ? fmtInt(t.lag) : 'no high watermark seen yet';
    var ri = avgRate('in', 5), ro = avgRate('out', 5);
    setText($('k-in-rate'), ri == null ? ' ' : fmtRate(ri) + ' now');
    setText($('k-out-rate'), ro == null ? ' ' : fmtRate(ro) + ' now');
    setText($('k-dup'), fmtInt(t.duplicates) + ' duplicates dropped');
    var rec = p.partitions.filter(function (x) { return x.status === 'recovering'; }).length;
    var owned = p.partitions.length - rec;
    setText($('k-parts'), owned + ' of ' + (p.input_partitions || '?') + ' partitions' + (rec ? ' · ' + rec + ' recovering' : ''));
  }

  // keyedRows updates tbody in place: rows keyed by key(item), cells from
  // cells(item) as [text, className, html?].
  function keyedRows(tbody, items, key, cells) {
    var seen = {};
    items.forEach(function (it, i) {
      var k = String(key(it));
      seen[k] = true;
      var row = tbody._rows && tbody._rows[k];
      var cs = cells(it);
      if (!row) {
        row = document.createElement('tr');
        cs.forEach(function () { row.appendChild(document.createElement('td')); });
        tbody._rows = tbody._rows || {};
        tbody._rows[k] = row;
      }
      cs.forEach(function (c, j) {
        var td = row.children[j];
        var cls = c[1] || '';
        if (td.className !== cls) td.className = cls;
        if (c[2]) setHTML(td, c[2]); else setText(td, c[0]);
        if (c[3] !== undefined && td.title !== c[3]) td.title = c[3];
      });
      if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
    });
    Object.keys(tbody._rows || {}).forEach(function (k) {
      if (!seen[k]) { tbody._rows[k].remove(); delete tbody._rows[k]; }
    });
  }

  function renderPartitions(p) {
    var tbody = $('partitions').tBodies[0];
    var maxLag = 1;
    p.partitions.forEach(function (x) { maxLag = Math.max(maxLag, x.lag); });
    keyedRows(tbody, p.partitions, function (x) { return x.partition; }, function (x) {
      var status;
      if (x.status === 'recovering') {
        var pr = x.recovery || { progress: 0, replayed: 0, total: 0 };
        status = '<span class="pill warn">recovering</span><span class="progress"><i style="width:' + Math.round(pr.progress * 100) + '%"></i></span>' +
          ' <span class="muted">' + fmtCompact(pr.replayed) + (pr.total ? ' / ' + fmtCompact(pr.total) : '') + '</span>';
      } else {
        status = '<span class="pill ok">running</span>';
      }
      var rec = x.status === 'recovering' ? '–' : x.recovery_source || '–';
      // A high watermark of 0 means none seen yet: lag unknown.
      var known = x.high_watermark > 0 || x.committed_offset === 0;
      var lagHTML = known ? '<span class="lagbar"><i style="width:' + Math.round(x.lag / maxLag * 100) + '%"></i></span>' + fmtInt(x.lag) : '<span class="muted">–</span>';
      return [
        [String(x.partition)], ['', '', status],
        [fmtInt(x.committed_offset), 'num'], [known ? fmtInt(x.high_watermark) : '–', 'num', null, known ? '' : 'no high watermark seen yet'], ['', 'num', lagHTML],
        [fmtInt(x.records_in), 'num'], [fmtInt(x.records_out), 'num'], [fmtInt(x.records_dlq), 'num'], [fmtInt(x.duplicates), 'num'],
        [fmtBytes(x.state_bytes), 'num'], [rec.replace(/^snapshot (\S+)$/, function (_, id) { return 'snapshot ' + shortID(id); }), 'id', null, rec]
      ];
    });
    $('partitions-empty').hidden = p.partitions.length > 0;
    setText($('parts-note'), p.input_partitions ? p.input_partitions + ' input partitions' : '');
  }

  function renderCheckpoints(c) {
    var tbody = $('checkpoints').tBodies[0];
    var hist = c.history.slice(0, 100);
    keyedRows(tbody, hist, function (s) { return s.id || ('f-' + s.partition + '-' + s.trigger_time); }, function (s) {
      var ok = s.status !== 'failed';
      return [
        [shortID(s.id), 'id', null, s.id || ''], [String(s.partition)], [fmtInt(s.offset), 'num'],
        [fmtClock(Date.parse(s.trigger_time))],
        [ok ? fmtMs(s.pause_ms) : '–', 'num'], [ok ? fmtMs(s.duration_ms) : '–', 'num'],
        [ok ? fmtBytes(s.bytes_written) : '–', 'num'], [ok ? fmtBytes(s.total_bytes) : '–', 'num'],
        [s.mode || '–'],
        ['', '', ok ? '<span class="pill ok">completed</span>' : '<span class="pill bad">failed</span>', s.failure_cause || '']
      ];
    });
    $('checkpoints-empty').hidden = hist.length > 0;
    setText($('ckpt-note'), c.history.length ? 'latest ' + Math.min(100, c.history.length) + ' of ' + c.history.length + ' recent' : '');

    var lc = c.latest_completed;
    setText($('k-ckpt-sub'), lc ? fmtMs(lc.duration_ms) + ' · ' + fmtBytes(lc.bytes_written) + ' written' : 'none yet');
    if (!lc) setText($('k-ckpt'), '–');
    setText($('k-ckpts'), fmtInt(c.counts.completed));
    setHTML($('k-ckpts-sub'), (c.counts.failed ? '<span class="bad">' + c.counts.failed + ' failed</span>' : '0 failed') +
      ' · ' + c.savepoints.length + ' savepoint' + (c.savepoints.length === 1 ? '' : 's'));

    var ul = $('savepoints');
    var html = '';
    c.savepoints.slice(0, 8).forEach(function (sp) {
      html += '<li><span class="n" title="' + esc(sp.path) + '">' + esc(sp.name) + '</span><span class="d">' +
        esc(fmtStamp(Date.parse(sp.created_at))) + ' · ' + fmtBytes(sp.bytes) + '</span></li>';
    });
    setHTML(ul, html);
    $('savepoints-empty').hidden = c.savepoints.length > 0;
    if (c.savepoints_error) setText($('savepoints-empty'), c.savepoints_error);
  }

  function snapTip(s) {
    var h = '<div class="tt-h">' + esc(fmtClock(Date.parse(s.trigger_time))) + ' · partition ' + s.partition + '</div>';
    if (s.status === 'failed') return h + '<div class="tt-r"><i style="background:' + C.fail + '"></i>failed: ' + esc(s.failure_cause || '') + '</div>';
    return h +
      '<div class="tt-r"><i style="background:' + C.dur + '"></i>duration <b>' + fmtMs(s.duration_ms) + '</b></div>' +
      '<div class="tt-r"><i style="background:' + C.pause + '"></i>pause <b>' + fmtMs(s.pause_ms) + '</b></div>' +
      '<div class="tt-r"><i style="background:' + C.written + '"></i>written <b>' + fmtBytes(s.bytes_written) + '</b></div>' +
      '<div class="tt-r"><i style="background:' + C.total + '"></i>snapshot size <b>' + fmtBytes(s.total_bytes) + '</b> · ' + esc(s.mode || '') + '</div>' +
      (s.job_bytes ? '<div class="tt-r"><i style="background:' + C.total + '"></i>all partitions <b>' + fmtBytes(s.job_bytes) + '</b></div>' : '');
  }

  function renderCharts() {
    var n = samples.length;
    var ptsIn = [], ptsOut = [], ptsLag = [];
    for (var i = 0; i < n; i++) {
      var s = samples[i];
      ptsIn.push([s.t, s.in_rate]); ptsOut.push([s.t, s.out_rate]); ptsLag.push([s.t, s.lag]);
    }
    // Shade the periods the job was not RUNNING (restarts) behind the lines.
    var bands = [], open = null;
    samples.forEach(function (s) {
      if (s.state !== 'RUNNING') {
        if (open && open.s === s.state) open.b = s.t;
        else { open = { s: s.state, a: s.t, b: s.t }; bands.push(open); }
      } else if (open) { open.b = s.t; open = null; }
    });
    timeChart($('chart-throughput'), [
      { name: 'in', color: C.in, area: true, pts: ptsIn },
      { name: 'out', color: C.out, dash: '5 3', pts: ptsOut }
    ], function (v, tip) { return tip ? fmtInt(v) + '/s' : fmtCompact(v); }, bands);
    timeChart($('chart-lag'), [{ name: 'lag', color: C.lag, area: true, pts: ptsLag }],
      function (v, tip) { return tip ? fmtInt(v) + ' records' : fmtCompact(v); }, bands);
    if (ckpts) {
      // The job's checkpointed size after each snapshot: the newest total of
      // every partition, summed.
      var latest = {}, all = ckpts.history.slice().reverse();
      all.forEach(function (s) {
        if (s.status !== 'failed') latest[s.partition] = s.total_bytes;
        var sum = 0;
        Object.keys(latest).forEach(function (k) { sum += latest[k]; });
        s.job_bytes = sum;
      });
      var items = all.slice(-MAX_SNAP_BARS);
      barChart($('chart-snapdur'), items,
        [{ get: function (s) { return s.duration_ms; }, color: C.dur }, { get: function (s) { return s.pause_ms; }, color: C.pause, width: 0.45 }],
        null, function (v) { return v === 0 ? '0' : fmtMs(v).replace(' ', ''); }, false, snapTip);
      barChart($('chart-snapbytes'), items,
        [{ get: function (s) { return s.bytes_written; }, color: C.written }],
        { get: function (s) { return s.job_bytes; }, color: C.total },
        function (v) { return fmtBytes(v); }, true, snapTip);
    }
  }

  // The timeline: the job's states since start as a coloured band, with a
  // marker at every failure.
  function renderTimeline(j) {
    var el = $('timeline');
    var w = el.clientWidth, h = el.clientHeight;
    if (w < 50) return;
    var t1 = now(), t0 = Date.parse(j.started);
    var tr = j.transitions || [];
    if (tr.length && Date.parse(tr[0].time) < t0) t0 = Date.parse(tr[0].time);
    if (t1 - t0 < 5000) t1 = t0 + 5000;
    var L = 8, R = 8, bandT = 16, bandH = 22;
    var pw = w - L - R;
    var x = function (t) { return L + (t - t0) / (t1 - t0) * pw; };
    var segs = [];
    var cur = tr.length ? tr[0].from || 'CREATED' : j.state, from = t0;
    tr.forEach(function (t) {
      var tt = Date.parse(t.time);
      segs.push({ s: cur, a: from, b: tt });
      cur = t.to; from = tt;
    });
    segs.push({ s: cur, a: from, b: Math.min(now(), t1) });
    var o = svgOpen(w, h);
    o += '<defs><clipPath id="band-clip"><rect x="' + L + '" y="' + bandT + '" width="' + pw + '" height="' + bandH + '" rx="5"/></clipPath></defs>';
    o += '<rect x="' + L + '" y="' + bandT + '" width="' + pw + '" height="' + bandH + '" rx="5" fill="#1a222c"/>';
    o += '<g clip-path="url(#band-clip)">';
    segs.forEach(function (s) {
      var a = x(s.a), b = Math.max(a + 1.5, x(s.b));
      o += '<rect x="' + r1(a) + '" y="' + bandT + '" width="' + r1(b - a) + '" height="' + bandH + '" fill="' + (STATE_COLOR[s.s] || '#555') + '" opacity="' + (s.s === 'RUNNING' ? '.55' : '.85') + '">' +
        '<title>' + esc(s.s + ' ' + fmtClock(s.a) + ' – ' + fmtClock(s.b) + ' (' + fmtAge((s.b - s.a) / 1000) + ')') + '</title></rect>';
    });
    o += '</g>';
    tr.forEach(function (t) {
      if (t.to !== 'RESTARTING' && t.to !== 'FAILED') return;
      var xx = r1(x(Date.parse(t.time)));
      var col = t.to === 'FAILED' ? C.fail : '#e3b341';
      o += '<path d="M' + (xx - 5) + ',2 L' + (xx + 5) + ',2 L' + xx + ',' + (bandT - 3) + ' Z" fill="' + col + '">' +
        '<title>' + esc(fmtClock(Date.parse(t.time)) + ' attempt ' + t.attempt + ' failed: ' + (t.cause || '')) + '</title></path>';
      o += '<line x1="' + xx + '" x2="' + xx + '" y1="' + bandT + '" y2="' + (bandT + bandH) + '" stroke="' + col + '" stroke-width="1.5"/>';
    });
    timeTicks(t0, t1, Math.max(2, Math.floor(pw / 110))).forEach(function (t) {
      var xx = r1(x(t));
      o += '<text x="' + xx + '" y="' + (h - 4) + '" text-anchor="middle">' + fmtClock(t) + '</text>';
    });
    o += '</svg>';
    el.innerHTML = o;
    el.dataset.segments = String(segs.length);

    var legend = '';
    ['CREATED', 'RUNNING', 'RESTARTING', 'FAILED', 'FINISHED', 'CANCELED'].forEach(function (s) {
      legend += '<span class="sw" style="background:' + STATE_COLOR[s] + '"></span>' + s.toLowerCase();
    });
    setHTML($('timeline-legend'), legend);

    var list = '';
    tr.slice().reverse().slice(0, 50).forEach(function (t) {
      var cause = t.cause ? t.cause : '';
      if (t.delay_ms) cause = 'restart in ' + fmtMs(t.delay_ms) + (cause ? ' · ' + cause : '');
      list += '<li><span class="t">' + fmtClock(Date.parse(t.time)) + '</span><span><span class="st st-' + esc(t.from) + '">' + esc(t.from) +
        '</span> <span class="muted">→</span> <span class="st st-' + esc(t.to) + '">' + esc(t.to) + '</span> <span class="muted">attempt ' + t.attempt +
        '</span></span><span class="cause" title="' + esc(cause) + '">' + esc(cause) + '</span></li>';
    });
    setHTML($('transitions'), list);
  }

  // ---- data ----
  function getJSON(path) {
    return fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
      return r.json();
    });
  }

  function live(ok, text) {
    var el = $('live');
    var cls = 'live ' + (ok ? 'ok' : 'err');
    if (el.className !== cls) el.className = cls;
    setText($('live-text'), text);
  }

  var timer = null;
  function tick() {
    clearTimeout(timer);
    Promise.all([
      getJSON('/api/v1/job'), getJSON('/api/v1/partitions'), getJSON('/api/v1/checkpoints'),
      getJSON('/api/v1/timeseries?since=' + lastT)
    ]).then(function (r) {
      job = r[0]; ckpts = r[2];
      skew = Date.parse(job.now) - Date.now();
      var ts = r[3];
      capacity = ts.capacity || capacity;
      ts.samples.forEach(function (s) { if (s.t > lastT) { samples.push(s); lastT = s.t; } });
      if (samples.length > capacity) samples.splice(0, samples.length - capacity);
      renderJob(job);
      renderKPIs(r[1]);
      renderPartitions(r[1]);
      renderCheckpoints(ckpts);
      renderCharts();
      renderTimeline(job);
      renderClock();
      live(true, 'live · ' + fmtClock(now()));
    }).catch(function (e) {
      live(false, 'disconnected');
      if (window.console && console.warn) console.warn('txstream dashboard:', e.message);
    }).then(function () {
      timer = setTimeout(tick, REFRESH_MS);
    });
  }

  // ---- actions ----
  var toastTimer = null;
  function toast(msg, err) {
    var el = $('toast');
    el.textContent = msg;
    el.className = 'toast' + (err ? ' err' : '');
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 6000);
  }

  function post(path, body, retried) {
    var headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    var token = sessionStorage.getItem('txstream-token');
    if (token) headers.Authorization = 'Bearer ' + token;
    return fetch(path, { method: 'POST', headers: headers, body: body ? JSON.stringify(body) : '' }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (r.status === 401 && !retried) {
          var t = window.prompt('This server requires a bearer token (--http-token):');
          if (t) { sessionStorage.setItem('txstream-token', t); return post(path, body, true); }
        }
        if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
        return j;
      });
    });
  }

  function stamp() {
    var d = new Date();
    return d.getFullYear() + pad(d.getMonth() + 1) + pad(d.getDate()) + '-' + pad(d.getHours()) + pad(d.getMinutes()) + pad(d.getSeconds());
  }

  function setupActions() {
    $('btn-savepoint').addEventListener('click', function () {
      var name = window.prompt('Savepoint name:', 'manual-' + stamp());
      if (name === null) return;
      var btn = this;
      btn.disabled = true;
      toast('Taking savepoint "' + name + '"…');
      post('/api/v1/savepoints', { name: name }).then(function () {
        toast('Savepoint "' + name + '" taken.');
      }).catch(function (e) { toast('Savepoint failed: ' + e.message, true); })
        .then(function () { btn.disabled = false; tick(); });
    });
    $('btn-cancel').addEventListener('click', function () {
      if (!window.confirm('Cancel the job? It drains (commit + final snapshot) and the process exits.')) return;
      post('/api/v1/job/cancel').then(function (j) { toast(j.message || 'Cancel requested.'); })
        .catch(function (e) { toast('Cancel failed: ' + e.message, true); })
        .then(tick);
    });
  }

  function init() {
    ['chart-throughput', 'chart-lag', 'chart-snapdur', 'chart-snapbytes'].forEach(function (id) { attachHover($(id)); });
    setupActions();
    var rz = null;
    window.addEventListener('resize', function () {
      clearTimeout(rz);
      rz = setTimeout(function () { renderCharts(); if (job) renderTimeline(job); }, 120);
    });
    setInterval(renderClock, 1000);
    tick();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
