/* gptwaves report: generated-text selector, figure lightbox and the wave explorer.
   Plain JS, no libraries. Generated text is only ever inserted with textContent. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    return e;
  }

  /* ---------------------------------------------------------------- generated text selector */
  var tsel = document.getElementById("text-select");
  if (tsel) {
    tsel.addEventListener("change", function () {
      var panes = document.querySelectorAll(".textpane");
      for (var i = 0; i < panes.length; i++) panes[i].hidden = panes[i].getAttribute("data-k") !== tsel.value;
    });
  }

  /* ---------------------------------------------------------------- figure lightbox */
  var box = document.getElementById("lightbox");
  if (box && typeof box.showModal === "function") {
    document.addEventListener("click", function (ev) {
      var t = ev.target;
      if (t && t.tagName === "IMG" && t.closest && t.closest("figure.fig")) {
        box.textContent = "";
        var img = el("img");
        img.src = t.src;
        img.alt = t.alt;
        box.appendChild(img);
        box.appendChild(el("p", null, t.alt + " (click or Esc to close)"));
        box.showModal();
      } else if (t === box || (t && t.parentNode === box)) {
        box.close();
      }
    });
  }

  /* ---------------------------------------------------------------- wave explorer */
  var dataEl = document.getElementById("wx-data");
  if (!dataEl) return;
  var DATA;
  try { DATA = JSON.parse(dataEl.textContent); } catch (e) { console.warn("wave data unreadable", e); return; }
  var cks = DATA.checkpoints || [];
  if (!cks.length) return;

  var selCk = document.getElementById("wx-ckpt");
  var selTap = document.getElementById("wx-tap");
  var inCh = document.getElementById("wx-ch");
  var info = document.getElementById("wx-info");
  var plot = document.getElementById("wx-plot");
  var textBox = document.getElementById("wx-text");
  var decoded = {}; // cache: ck index + tap -> Int8Array

  cks.forEach(function (c, i) {
    var o = el("option", null, c.iteration !== null && c.iteration !== undefined ? "iteration " + c.iteration : c.name);
    o.value = String(i);
    selCk.appendChild(o);
  });
  selCk.value = String(cks.length - 1);

  function b64ToInt8(s) {
    var bin = atob(s), n = bin.length, out = new Int8Array(n);
    for (var i = 0; i < n; i++) { var b = bin.charCodeAt(i); out[i] = b > 127 ? b - 256 : b; }
    return out;
  }
  function tapData() {
    var c = cks[+selCk.value];
    return c ? c.taps[selTap.value] : null;
  }
  function fillTaps(keep) {
    var c = cks[+selCk.value];
    selTap.textContent = "";
    var names = Object.keys(c.taps);
    names.forEach(function (t) { var o = el("option", null, t); o.value = t; selTap.appendChild(o); });
    if (keep && names.indexOf(keep) >= 0) selTap.value = keep;
    else {
      var last = names.filter(function (t) { return /^blocks\.\d+\.hook_resid_post$/.test(t); }).pop();
      selTap.value = last || names[names.length - 1];
    }
  }
  function channelSeries(ci, tap, k) {
    var key = ci + "|" + tap, td = cks[ci].taps[tap];
    if (!decoded[key]) decoded[key] = b64ToInt8(td.q);
    var q = decoded[key], C = td.C, T = cks[ci].steps, lo = td.lo[k], sc = td.scale[k];
    var y = new Float64Array(T);
    for (var t = 0; t < T; t++) y[t] = lo + (q[t * C + k] + 127) * sc;
    return y;
  }

  // diverging colour map (blue - white - red), v in [-1, 1]
  function diverging(v) {
    v = Math.max(-1, Math.min(1, v));
    var a = Math.abs(v), r, g, b;
    if (v >= 0) { r = 255 - a * (255 - 178); g = 255 - a * (255 - 24); b = 255 - a * (255 - 43); }
    else { r = 255 - a * (255 - 33); g = 255 - a * (255 - 102); b = 255 - a * (255 - 172); }
    return "rgb(" + Math.round(r) + "," + Math.round(g) + "," + Math.round(b) + ")";
  }

  var state = { marker: null, spans: [], T: 0, X: null };

  function draw() {
    var ci = +selCk.value, c = cks[ci], tap = selTap.value, td = c.taps[tap];
    var C = td.C;
    inCh.max = String(C - 1);
    var k = parseInt(inCh.value, 10);
    if (!isFinite(k)) k = 0;
    k = Math.max(0, Math.min(C - 1, k));
    if (String(k) !== inCh.value) inCh.value = String(k);
    var y = channelSeries(ci, tap, k), T = y.length;
    var mean = 0, lo = Infinity, hi = -Infinity;
    for (var t = 0; t < T; t++) { mean += y[t]; if (y[t] < lo) lo = y[t]; if (y[t] > hi) hi = y[t]; }
    mean /= Math.max(T, 1);
    var amp = 0;
    for (t = c.n_prompt; t < T; t++) amp = Math.max(amp, Math.abs(y[t] - mean));
    if (!(amp > 0)) amp = Math.max(Math.abs(hi - mean), Math.abs(lo - mean)) || 1;
    if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
    var pad = 0.06 * (hi - lo); lo -= pad; hi += pad;

    var W = 1000, H = 240, ml = 56, mr = 12, mt = 10, mb = 30;
    function X(t) { return ml + (T > 1 ? t / (T - 1) : 0.5) * (W - ml - mr); }
    function Y(v) { return mt + (hi - v) / (hi - lo) * (H - mt - mb); }
    state.X = X; state.T = T;
    var s = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", "class": "wx", role: "img" });
    if (c.n_prompt > 0) s.appendChild(svg("rect", { x: ml, y: mt, width: Math.max(X(c.n_prompt - 0.5) - ml, 0), height: H - mt - mb, "class": "promptband" }));
    // spaces as ticks (word rhythm)
    for (t = 0; t < T; t++) if (c.chars[t] === " ") s.appendChild(svg("line", { x1: X(t), x2: X(t), y1: H - mb - 8, y2: H - mb, "class": "spacetick" }));
    // y ticks
    var ticks = niceTicks(lo, hi, 4);
    ticks.forEach(function (v) {
      s.appendChild(svg("line", { x1: ml, x2: W - mr, y1: Y(v), y2: Y(v), "class": "grid" }));
      var tx = svg("text", { x: ml - 6, y: Y(v) + 4, "text-anchor": "end", "class": "tick" });
      tx.textContent = fmtNum(v); s.appendChild(tx);
    });
    niceTicks(0, T - 1, 8).forEach(function (v) {
      var tx = svg("text", { x: X(v), y: H - mb + 16, "text-anchor": "middle", "class": "tick" });
      tx.textContent = String(Math.round(v)); s.appendChild(tx);
    });
    s.appendChild(svg("line", { x1: ml, x2: W - mr, y1: Y(mean), y2: Y(mean), "class": "meanline" }));
    var d = "";
    for (t = 0; t < T; t++) d += (t ? " L" : "M") + X(t).toFixed(1) + "," + Y(y[t]).toFixed(2);
    s.appendChild(svg("path", { d: d, "class": "wave", id: "wx-path" }));
    s.appendChild(svg("rect", { x: ml, y: mt, width: W - ml - mr, height: H - mt - mb, "class": "frame" }));
    var mk = svg("line", { x1: 0, x2: 0, y1: mt, y2: H - mb, "class": "marker", visibility: "hidden" });
    s.appendChild(mk);
    state.marker = mk;
    var lab = svg("text", { x: W - mr - 4, y: mt + 14, "text-anchor": "end", "class": "plotlabel" });
    lab.textContent = tap + " · channel " + k;
    s.appendChild(lab);
    s.addEventListener("mousemove", function (ev) {
      var r = s.getBoundingClientRect();
      var xv = (ev.clientX - r.left) / r.width * W;
      var tt = Math.round((xv - ml) / (W - ml - mr) * (T - 1));
      if (tt >= 0 && tt < T) highlight(tt); else highlight(-1);
    });
    s.addEventListener("mouseleave", function () { highlight(-1); });
    plot.textContent = "";
    plot.appendChild(s);

    // text coloured by the channel's value
    textBox.textContent = "";
    state.spans = [];
    var frag = document.createDocumentFragment();
    for (t = 0; t < T; t++) {
      var ch = c.chars[t];
      var sp = el("span", t < c.n_prompt ? "ch p" : "ch");
      sp.textContent = ch === "\n" ? "\u21b5" : ch;
      var v = (y[t] - mean) / amp;
      sp.style.backgroundColor = diverging(v);
      if (Math.abs(v) > 0.6) sp.style.color = "#fff";
      sp.title = "step " + t + ": " + JSON.stringify(ch) + " = " + fmtNum(y[t]);
      sp.setAttribute("data-t", String(t));
      frag.appendChild(sp);
      state.spans.push(sp);
      if (ch === "\n") frag.appendChild(document.createElement("br"));
    }
    textBox.appendChild(frag);

    var sd = td.space_channel;
    info.textContent = "C = " + C + " channels; " + T + " steps (" + c.n_prompt + " prompt)" +
      (sd !== null && sd !== undefined ? "; most space-selective: " + sd + " (d = " + td.space_d + ")" : "");
  }

  function highlight(t) {
    if (!state.marker) return;
    var prev = textBox.querySelector(".ch.hl");
    if (prev) prev.classList.remove("hl");
    if (t < 0) { state.marker.setAttribute("visibility", "hidden"); return; }
    state.marker.setAttribute("x1", state.X(t)); state.marker.setAttribute("x2", state.X(t));
    state.marker.setAttribute("visibility", "visible");
    if (state.spans[t]) state.spans[t].classList.add("hl");
  }
  textBox.addEventListener("mouseover", function (ev) {
    var t = ev.target && ev.target.getAttribute ? ev.target.getAttribute("data-t") : null;
    if (t !== null) highlight(+t);
  });
  textBox.addEventListener("mouseleave", function () { highlight(-1); });

  function niceTicks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    var raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), step = 10 * mag;
    [1, 2, 2.5, 5, 10].some(function (m) { if (m * mag >= raw) { step = m * mag; return true; } return false; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(+v.toFixed(10));
    return out;
  }
  function fmtNum(v) {
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return String(+v.toPrecision(3));
  }

  selCk.addEventListener("change", function () { fillTaps(selTap.value); draw(); });
  selTap.addEventListener("change", draw);
  inCh.addEventListener("input", draw);
  inCh.addEventListener("change", draw);
  document.getElementById("wx-prev").addEventListener("click", function () { inCh.value = String(Math.max(0, (+inCh.value || 0) - 1)); draw(); });
  document.getElementById("wx-next").addEventListener("click", function () { inCh.value = String((+inCh.value || 0) + 1); draw(); });
  document.getElementById("wx-space").addEventListener("click", function () {
    var td = tapData();
    if (td && td.space_channel !== null && td.space_channel !== undefined) { inCh.value = String(td.space_channel); draw(); }
  });
  fillTaps(null);
  var td0 = tapData();
  if (td0 && td0.space_channel !== null && td0.space_channel !== undefined) inCh.value = String(td0.space_channel);
  draw();
})();
