// Ember's dashboard: live parts of a page follow server-sent events (no page reloads).
// An element with data-events gets its content replaced by each "fragment" event (HTML the
// server rendered and escaped); the log (data-log-events) gets lines appended, built here
// with textContent, so nothing in a log line is ever read as HTML.
"use strict";

function follow(url, handlers) {
  const source = new EventSource(url);
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => handle(e.data));
  }
  source.addEventListener("end", () => source.close());
  window.addEventListener("pagehide", () => source.close());
  return source;
}

function confirmForms(root) {
  for (const button of root.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (e) => {
      if (!window.confirm(button.dataset.confirm)) e.preventDefault();
    });
  }
}

function pad(n, width) {
  return String(n).padStart(width, "0");
}

function logLine(seq, at, fn, container, input, fd, data) {
  const line = document.createElement("div");
  line.className = {2: "line err", 3: "line event"}[fd] || "line";
  line.dataset.seq = seq;
  const d = new Date(at * 1000);
  const time = document.createElement("time");
  time.textContent = `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.` +
    pad(d.getMilliseconds(), 3);
  const src = document.createElement("span");
  src.className = "src";
  src.textContent = [fn, container, input].filter((p) => p).join(" · ");
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = data.replace(/\n$/, "");
  line.append(time, src, text);
  return line;
}

document.addEventListener("DOMContentLoaded", () => {
  confirmForms(document);
  for (const el of document.querySelectorAll("[data-events]")) {
    follow(el.dataset.events, {
      fragment: (html) => {
        el.innerHTML = html;
        confirmForms(el);
      },
    });
  }
  const log = document.querySelector("[data-log-events]");
  if (log) {
    follow(log.dataset.logEvents, {
      log: (data) => {
        const atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
        for (const entry of JSON.parse(data)) log.append(logLine(...entry));
        if (atEnd) window.scrollTo(0, document.body.scrollHeight);
      },
    });
  }
});
