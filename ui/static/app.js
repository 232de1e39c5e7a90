// Sawmill UI: the little behaviour pages need (local times, keyboard, histogram zoom, load
// more, live tail). Log content is only ever inserted as text or as rows the server escaped.
"use strict";

(function () {
  const body = document.body;
  const pad = (n, w) => String(n).padStart(w || 2, "0");

  // --- times: tz=local shows each instant in the browser's zone, with its own offset.
  function localText(iso, short) {
    const d = new Date(iso);
    if (isNaN(d)) return null;
    const off = -d.getTimezoneOffset();
    const sign = off >= 0 ? "+" : "-";
    const zone = sign + pad(Math.floor(Math.abs(off) / 60)) + ":" + pad(Math.abs(off) % 60);
    const hms = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (short) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      hms + "." + pad(d.getMilliseconds(), 3) + " " + zone;
  }
  function localize(root) {
    if (body.dataset.tz !== "local") return;
    root.querySelectorAll("time[datetime]").forEach((t) => {
      const s = localText(t.getAttribute("datetime"));
      if (s) t.textContent = s;
    });
    root.querySelectorAll("text[data-iso]").forEach((t) => {
      const s = localText(t.getAttribute("data-iso"), true);
      if (s) t.textContent = s;
    });
  }
  localize(document);

  // --- facet bars: widths from data, set through the CSSOM (no inline style attributes).
  document.querySelectorAll(".facet .bar[data-pct]").forEach((b) => {
    b.style.width = Math.min(100, Number(b.dataset.pct) || 0) + "%";
  });

  // --- loading states
  document.querySelectorAll("form.querybar").forEach((f) => {
    f.addEventListener("submit", () => body.classList.add("loading"));
  });
  window.addEventListener("pageshow", () => body.classList.remove("loading"));

  // --- keyboard: / focuses the query, j/k move, Enter expands, c context, t request view.
  let current = -1;
  const rows = () => Array.from(document.querySelectorAll("details.row"));
  function select(i) {
    const all = rows();
    if (!all.length) return;
    i = Math.max(0, Math.min(all.length - 1, i));
    all.forEach((r) => r.classList.remove("selected"));
    current = i;
    all[i].classList.add("selected");
    all[i].scrollIntoView({ block: "nearest" });
  }
  function follow(sel) {
    const r = rows()[current];
    const a = r && r.querySelector(sel);
    if (a) window.location.href = a.getAttribute("href");
  }
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    const q = document.getElementById("q");
    switch (e.key) {
      case "/":
        if (q) { e.preventDefault(); q.focus(); q.select(); }
        break;
      case "j": select(current + 1); break;
      case "k": select(current - 1); break;
      case "Enter": {
        const r = rows()[current];
        if (r && document.activeElement === document.body) { e.preventDefault(); r.open = !r.open; }
        break;
      }
      case "c": follow("a.ctx"); break;
      case "t": follow("a.trace"); break;
    }
  });
  document.addEventListener("click", (e) => {
    const r = e.target.closest && e.target.closest("details.row");
    if (r) {
      const i = rows().indexOf(r);
      if (i >= 0) { rows().forEach((x) => x.classList.remove("selected")); current = i; r.classList.add("selected"); }
    }
  });

  // --- histogram: a click follows the bar's link; a drag across bars zooms to the span.
  const hist = document.querySelector("svg.histogram");
  if (hist) {
    let from = null, to = null, dragged = false;
    const bucketOf = (t) => t.closest && t.closest("a.bucket");
    const buckets = () => Array.from(hist.querySelectorAll("a.bucket"));
    function mark() {
      const all = buckets();
      const [a, b] = [all.indexOf(from), all.indexOf(to)].sort((x, y) => x - y);
      all.forEach((x, i) => x.classList.toggle("span", from !== null && i >= a && i <= b));
    }
    hist.addEventListener("mousedown", (e) => {
      const b = bucketOf(e.target);
      if (!b) return;
      e.preventDefault();
      from = to = b; dragged = false; mark();
    });
    hist.addEventListener("mousemove", (e) => {
      if (!from) return;
      const b = bucketOf(e.target);
      if (b && b !== to) { to = b; dragged = true; mark(); }
    });
    document.addEventListener("mouseup", () => {
      if (!from) return;
      if (dragged && from !== to) {
        const all = buckets();
        const [a, b] = [all.indexOf(from), all.indexOf(to)].sort((x, y) => x - y);
        // Each bar links to Discover zoomed to its bucket: the span runs from the first
        // bar's start to the last bar's end.
        const first = new URL(all[a].getAttribute("href"), window.location.href);
        const last = new URL(all[b].getAttribute("href"), window.location.href);
        const u = new URL(window.location.href);
        u.searchParams.set("start", first.searchParams.get("start"));
        u.searchParams.set("end", last.searchParams.get("end"));
        u.searchParams.delete("cursor");
        body.classList.add("loading");
        window.location.href = u.pathname + u.search;
      }
      from = null;
      setTimeout(() => { dragged = false; mark(); }, 0);
    });
    hist.addEventListener("click", (e) => { if (dragged) e.preventDefault(); });
  }

  // --- load more: append the next page's rows in place.
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a.more-link");
    if (!a || !a.dataset.rows) return;
    e.preventDefault();
    a.textContent = "loading…";
    fetch(a.dataset.rows, { headers: { accept: "text/html" } })
      .then((r) => r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status)))
      .then((html) => {
        const doc = new DOMParser().parseFromString(html, "text/html");
        const frag = doc.querySelector(".rows-fragment");
        const p = a.closest("p.more");
        if (frag) {
          localize(frag);
          Array.from(frag.children).forEach((c) => p.before(c));
        }
        p.remove();
      })
      .catch((err) => { a.textContent = "could not load more (" + err.message + "): click to retry"; });
  });

  // --- context: keep the anchor in view.
  const anchor = document.getElementById("anchor");
  if (anchor) {
    anchor.scrollIntoView({ block: "center" });
    select(rows().indexOf(anchor));
  }

  // --- live tail over server-sent events, with pause and reconnection.
  const list = document.querySelector("#rows.tail");
  if (list) {
    const status = document.getElementById("tail-status");
    const buffered = document.getElementById("tail-buffered");
    const pauseBtn = document.getElementById("pause");
    const MAX_ROWS = 1000;
    let paused = false, held = [], es = null, lost = false, retry = null;
    const setStatus = (text, cls) => { status.textContent = text; status.className = "status " + (cls || ""); };
    const nearBottom = () => window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    function add(html) {
      const stick = nearBottom();
      const t = document.createElement("template");
      t.innerHTML = html; // a row rendered and escaped by the server's template
      localize(t.content);
      const empty = document.getElementById("tail-empty");
      if (empty) empty.remove();
      list.append(t.content);
      const all = list.querySelectorAll("details.row");
      for (let i = 0; i < all.length - MAX_ROWS; i++) all[i].remove();
      if (stick) window.scrollTo(0, document.body.scrollHeight);
    }
    function connect() {
      retry = null;
      es = new EventSource(list.dataset.stream);
      es.addEventListener("hello", () => {
        setStatus(lost ? "reconnected: live" : "live", "live");
        lost = false;
      });
      es.addEventListener("row", (ev) => {
        if (paused) { held.push(ev.data); buffered.textContent = held.length + " new while paused"; }
        else add(ev.data);
      });
      es.addEventListener("skipped", (ev) => {
        const p = document.createElement("p");
        p.className = "skipped";
        p.textContent = ev.data + " records arrived too fast to show; search them on Discover.";
        list.append(p);
      });
      es.addEventListener("problem", (ev) => setStatus("indexer reports: " + ev.data, "warn"));
      es.addEventListener("dropped", () => { lost = true; setStatus("connection to the indexer dropped; reconnecting…", "warn"); });
      es.onerror = () => {
        lost = true;
        setStatus("connection lost; reconnecting…", "warn");
        // The browser retries by itself unless the answer was an error; then we do.
        if (es.readyState === EventSource.CLOSED && !retry) {
          es.close();
          retry = setTimeout(connect, 2000);
        }
      };
    }
    pauseBtn.addEventListener("click", () => {
      paused = !paused;
      pauseBtn.textContent = paused ? "Resume" : "Pause";
      if (!paused) { held.forEach(add); held = []; buffered.textContent = ""; }
      else buffered.textContent = "paused";
    });
    window.scrollTo(0, document.body.scrollHeight);
    connect();
  }
})();
