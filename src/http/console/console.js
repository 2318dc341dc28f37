/* chaos-lab console: the browser side of GET /console (embedded in the binary, no build step).
 *
 * One page, two views, picked from location.pathname:
 *   /console            catalog (start a scenario), script panel, run history
 *   /console/runs/{id}  one run, live: its event stream, timeline, steps, logs, undo, impact
 * Moving between them is history.pushState + a re-render; popstate re-renders too.
 * On every view: the top bar (kill switch), the halted banner and the status panel, fed by
 * GET /chaos/status every 2 s.
 *
 * Every API call goes through api(), which adds `Authorization: Bearer <token>` when a token is
 * kept (sessionStorage only, never in a URL, the DOM or the console) and shows the token form on
 * a 401. The event stream is read with fetch() rather than EventSource, because EventSource cannot
 * send that header. Everything the service sends is put in the page as text (textContent),
 * except the server-rendered timeline SVG, which is inserted as markup on purpose.
 */
"use strict";

(() => {
  const TOKEN_KEY = "chaos-lab-token";
  const STATUSES = ["running", "succeeded", "failed", "aborted", "cancelled", "timed_out", "interrupted"];
  const STATUS_EVERY_MS = 2000;
  const CATALOG_EVERY_MS = 2000;
  const HISTORY_EVERY_MS = 3000;
  const TIMELINE_EVERY_MS = 1000;
  const RECONNECT_MS = 1000;
  /** A status request unanswered this long: say so, the panel is out of date. */
  const STALL_MS = 4000;

  // ---------------------------------------------------------------- small helpers

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  /** Builds an element: attributes from `props` (true = empty attribute; null/false = none),
   *  children as nodes or text (never parsed as HTML). */
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v != null && v !== false) e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c != null && c !== false) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  /** Replaces an element's children (null/false children are skipped, as in h()). */
  const fill = (el, ...children) => el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));

  const pad = (n) => String(n).padStart(2, "0");

  /** Local wall-clock time of an RFC 3339 timestamp; the date too unless it is today. */
  function fmtTime(iso, withDate = false) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const today = new Date().toDateString() === d.toDateString();
    return withDate || !today ? `${date} ${time}` : time;
  }

  function fmtDuration(s) {
    if (s == null || !Number.isFinite(s)) return "—";
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  const fmtValue = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v));
  const badge = (status, id) => h("span", { id, class: `badge status-${status}` }, status);
  const isAbort = (e) => e && e.name === "AbortError";

  /** A guard for people, like the server's own reasons: "error rate > 5 % over 10 s (…)". */
  function guardText(g) {
    const parts = [];
    if (g.p95_ms != null) parts.push(`p95 > ${g.p95_ms} ms`);
    if (g.error_rate_pct != null) parts.push(`error rate > ${g.error_rate_pct} %`);
    let s = parts.join(" or ");
    if (parts.length) s += ` over ${g.window_s ?? 10} s (at least ${g.min_requests ?? 10} requests)`;
    if (g.unhealthy_s != null) s += `${s ? "; " : ""}unhealthy for ${g.unhealthy_s} s`;
    return g.source ? `${s} [${g.source}]` : s;
  }
  const guardJson = (g) => {
    const rest = { ...g };
    delete rest.source;
    return JSON.stringify(rest);
  };

  /** Short-lived message in the top bar (kill switch answers, report errors). */
  let noticeTimer = 0;
  function notice(text, kind = "ok") {
    const n = $("notice");
    n.textContent = text;
    n.className = `notice ${kind}`;
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (n.hidden = true), 10000);
  }

  // ---------------------------------------------------------------- the API and the token

  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.detail ? body.detail : `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  /** Parses a body as JSON when it is JSON, else returns the text. */
  async function readBody(res) {
    const text = await res.text().catch(() => "");
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }

  /**
   * The one way to call the service. `body`: a string is sent as text/plain (a script), anything
   * else as JSON. `opts.as`: "json" (default), "text", or "response" (for the event stream).
   * Throws ApiError for any non-2xx answer (after showing the token form on a 401).
   */
  async function api(method, path, body, opts = {}) {
    const headers = { Accept: opts.accept || "application/json" };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let payload;
    if (typeof body === "string") {
      headers["Content-Type"] = "text/plain; charset=utf-8";
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const res = await fetch(path, { method, headers, body: payload, signal: opts.signal, cache: "no-store" });
    if (res.status === 401) {
      // Ignore a late 401 for a token that has been replaced since this request left.
      if (storedToken() === token) askForToken(Boolean(token));
      throw new ApiError(401, await readBody(res));
    }
    if (!res.ok) throw new ApiError(res.status, await readBody(res));
    if (opts.as === "response") return res;
    if (opts.as === "text") return res.text();
    return readBody(res);
  }

  /** What went wrong, for people: the envelope's detail, with the script position if any. */
  function errorText(e) {
    if (!(e instanceof ApiError)) return `cannot reach the service (${e && e.message ? e.message : e})`;
    const b = e.body && typeof e.body === "object" ? e.body : null;
    let s = `HTTP ${e.status}: ${b ? b.detail || b.error : String(e.body || "").slice(0, 200) || e.message}`;
    if (b && b.line != null) s += ` (line ${b.line}${b.column != null ? `, column ${b.column}` : ""})`;
    return s;
  }

  /** Shows the token form over the whole UI (once); submitting it stores the token and
   *  re-renders the current view. `refused`: the stored token was answered 401. */
  function askForToken(refused) {
    if (refused) sessionStorage.removeItem(TOKEN_KEY);
    if ($("token-form")) return;
    const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
    const form = h(
      "form",
      { id: "token-form", class: "panel" },
      h("h2", {}, "This service needs its CHAOS_API_TOKEN"),
      h("p", {}, refused
        ? "The token was refused. Enter the service's CHAOS_API_TOKEN again."
        : "Every /chaos/* call except the status needs it. It is kept in this tab's session storage only."),
      h("label", {}, h("span", { class: "label" }, "Token"), input),
      h("button", { type: "submit", class: "primary" }, "Use this token"),
    );
    const overlay = h("div", { id: "auth-overlay", class: "overlay" }, form);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      input.value = "";
      overlay.remove();
      $("app").inert = false;
      route();
    });
    $("app").inert = true;
    document.body.append(overlay);
    input.focus();
  }

  // ---------------------------------------------------------------- scopes, polling, routing

  /** Lifetime of a view: aborting it cancels its requests, its stream and its polling loops. */
  function scope() {
    const ctrl = new AbortController();
    const signal = ctrl.signal;
    return {
      signal,
      get alive() {
        return !signal.aborted;
      },
      /** Resolves true after `ms`, or false at once when the scope ends. */
      sleep(ms) {
        return new Promise((resolve) => {
          if (signal.aborted) return resolve(false);
          const onAbort = () => {
            clearTimeout(t);
            resolve(false);
          };
          const t = setTimeout(() => {
            signal.removeEventListener("abort", onAbort);
            resolve(true);
          }, ms);
          signal.addEventListener("abort", onAbort, { once: true });
        });
      },
      stop: () => ctrl.abort(),
    };
  }

  /** Runs `fn` now and then every `ms` after each run ends (no overlap, so a stalled service is
   *  not flooded). Resolves after the first run. `fn` must handle its own errors. */
  async function poll(sc, ms, fn) {
    await fn();
    (async () => {
      while (await sc.sleep(ms)) await fn();
    })();
  }

  let view = null;
  let statusReady = Promise.resolve();

  function navigate(path) {
    if (path !== location.pathname) history.pushState(null, "", path);
    route();
  }

  /** Renders the view of location.pathname from scratch; sets body[data-ready] when done. */
  function route() {
    delete document.body.dataset.ready;
    if (view) view.stop();
    const sc = (view = scope());
    $("view").replaceChildren();
    const path = location.pathname.replace(/\/+$/, "");
    const run = path.match(/^\/console\/runs\/([^/]+)$/);
    let rendered;
    if (run) rendered = runView(sc, decodeURIComponent(run[1]));
    else if (path === "/console") rendered = catalogView(sc);
    else rendered = notFoundView(path);
    Promise.allSettled([rendered, statusReady]).then(() => {
      if (sc.alive) document.body.dataset.ready = "1";
    });
  }

  function notFoundView(path) {
    document.title = "chaos-lab console";
    $("view").append(
      h("section", { class: "panel" }, h("h2", {}, "Nothing here"), h("p", {}, `The console has no view at ${path}. `,
        h("a", { href: "/console" }, "Go to the catalog"), ".")),
    );
  }

  // ---------------------------------------------------------------- status panel, banner, kill switch

  let statusSince = 0; // when the status request in flight started (0: none in flight)
  let statusError = "";
  let lastStatus = "";

  async function refreshStatus() {
    statusSince = Date.now();
    try {
      const s = await api("GET", "/chaos/status");
      statusError = "";
      const key = JSON.stringify({ ...s, timestamp: null });
      if (key !== lastStatus) {
        lastStatus = key;
        renderStatus(s);
      }
    } catch (e) {
      statusError = `Cannot read /chaos/status: ${errorText(e)}`;
    } finally {
      statusSince = 0;
      updateStatusNote();
    }
  }

  function updateStatusNote() {
    const note = $("status-note");
    const stalled = statusSince && Date.now() - statusSince > STALL_MS;
    note.textContent = stalled
      ? `No answer from /chaos/status for ${Math.round((Date.now() - statusSince) / 1000)} s: ` +
        "the service is not answering; what this panel shows may be out of date."
      : statusError;
    note.hidden = !note.textContent;
  }

  function renderStatus(s) {
    // The halt latch.
    const banner = $("halted-banner");
    banner.hidden = !s.halted;
    if (s.halted) {
      const halt = s.halt || {};
      $("halted-text").textContent =
        `Chaos is halted since ${fmtTime(halt.at, true)} by ${halt.by || "the kill switch"}` +
        `${halt.detail ? ` (${halt.detail})` : ""}. New runs and faults are refused until you resume.`;
    }

    // The fault ledger.
    const faults = (s.faults || []).map((f) =>
      h("li", { class: `fault state-${f.state}`, "data-id": f.id },
        h("span", { class: "kind" }, f.kind), " ",
        h("span", { class: "target" }, f.target), " ",
        h("span", { class: "owner" }, "owner ", ownerLink(f.owner)), " ",
        h("span", { class: `state state-${f.state}` }, f.state),
        f.detail ? h("div", { class: "detail" }, f.detail) : null),
    );
    $("faults").replaceChildren(...(faults.length ? faults : [h("li", { class: "empty" }, "No active fault")]));

    // Load, hang, network, Redis, runs.
    const load = s.load || {};
    const hang = s.hang || {};
    const net = s.network || {};
    const redis = s.redis || {};
    const runs = s.runs || {};
    const rows = [
      ["Load", load.active ? `active: ${load.level}, ${load.remaining_seconds} s left` : "off"],
      ["Hang", hang.active
        ? `active: ${hang.scope} scope, ${hang.until_restart ? "until restart" : `${hang.remaining_seconds} s left`}`
        : "off"],
      ["Network", [`${net.blocked ? "blocked" : "not blocked"} (${net.backend || "?"} backend)`,
        ...(net.faults || []).map((f) => h("div", { class: "detail" },
          `${f.kind}: ${f.target}${f.latency_ms != null ? `, +${f.latency_ms} ms` : ""}` +
          `${f.expires_at ? `, until ${fmtTime(f.expires_at)}` : ""}`))]],
      ["Redis", redis.enabled === false ? "disabled" : [
        `${redis.connected ? "connected" : "not connected"}, ${redis.connection_count ?? 0} connection(s)`,
        redis.error ? h("div", { class: "detail bad" }, redis.error) : null,
        redis.last_reset ? h("div", { class: "detail" }, `last reset ${fmtTime(redis.last_reset)}`) : null]],
      ["Runs", [`${runs.active || 0} active`, runs.last ? h("div", { class: "detail" }, "last: ",
        h("a", { href: `/console/runs/${enc(runs.last.run_id)}` }, runs.last.run_id), " ", badge(runs.last.status)) : null]],
    ];
    $("status-details").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));

    // The fleet, when there is one.
    const fleet = s.fleet || {};
    const replicas = fleet.replicas || [];
    $("replicas-box").hidden = replicas.length <= 1 && !fleet.error;
    fill($("replicas"),
      ...replicas.map((r) => h("li", { class: `replica${r.self ? " self" : ""}` },
        h("span", { class: "name" }, r.name), r.self ? " (this replica)" : "",
        r.faults != null ? ` · ${r.faults} fault(s)` : "")),
      fleet.error ? h("li", { class: "bad" }, `store: ${fleet.error}`) : null,
    );
  }

  /** "run:<id>" owners link to the run. */
  function ownerLink(owner) {
    if (owner && owner.startsWith("run:")) {
      const id = owner.slice(4);
      return h("a", { href: `/console/runs/${enc(id)}` }, `run ${id}`);
    }
    return owner || "?";
  }

  async function killSwitch() {
    if (!window.confirm("Stop every run and undo every fault?")) return;
    notice("Kill switch: stopping…", "bad");
    try {
      const r = await api("POST", "/chaos/stop");
      const failed = (r.undo_failed || []).length;
      notice(`Halted: ${r.runs_cancelled} run(s) cancelled, ${r.faults_undone} fault(s) undone` +
        `${failed ? `, ${failed} undo(s) FAILED (see the faults list)` : ""} in ${r.all_clear_ms} ms.`, failed ? "bad" : "ok");
    } catch (e) {
      if (!isAbort(e)) notice(`Kill switch failed: ${errorText(e)}`, "bad");
    }
    refreshStatus();
  }

  async function resume() {
    try {
      const r = await api("POST", "/chaos/resume");
      notice(r.was_halted ? "Resumed: chaos may start again." : "Chaos was not halted.");
    } catch (e) {
      if (!isAbort(e)) notice(`Resume failed: ${errorText(e)}`, "bad");
    }
    refreshStatus();
  }

  /** Opens a run's HTML report: fetched with the token, shown from a blob URL. */
  async function openReport(id) {
    try {
      const html = await api("GET", `/chaos/runs/${enc(id)}/report`, undefined, { as: "text", accept: "text/html" });
      const url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      if (window.open(url) === null) showReportInline(html); // popup blocked
    } catch (e) {
      if (!isAbort(e)) notice(`Report of ${id}: ${errorText(e)}`, "bad");
    }
  }

  function showReportInline(html) {
    const frame = h("iframe", { sandbox: "", title: "run report" });
    frame.srcdoc = html;
    const dialog = h("dialog", { id: "report-dialog" },
      h("form", { method: "dialog" }, h("button", { type: "submit" }, "Close")), frame);
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
  }

  // ---------------------------------------------------------------- catalog view

  async function catalogView(sc) {
    document.title = "chaos-lab console";
    const catalog = h("section", { id: "catalog", class: "panel" },
      h("h2", {}, "Catalog"),
      h("p", { id: "catalog-note", class: "note", hidden: true }),
      h("div", { class: "scenario-list" }));
    const history = historyPanel();
    $("view").append(catalog, scriptPanel(sc), history);
    await Promise.allSettled([
      poll(sc, CATALOG_EVERY_MS, catalogRefresher(sc, catalog)),
      poll(sc, HISTORY_EVERY_MS, historyRefresher(sc, history)),
    ]);
  }

  /** GET /chaos/scenarios, re-rendering only the scenarios that changed, so what a user typed
   *  (and the focus) survives in the forms that stay. */
  function catalogRefresher(sc, catalog) {
    const list = catalog.querySelector(".scenario-list");
    const note = catalog.querySelector("#catalog-note");
    const keys = new WeakMap(); // section → the JSON it was built from
    let last = "";
    return async () => {
      let data;
      try {
        data = await api("GET", "/chaos/scenarios", undefined, { signal: sc.signal });
      } catch (e) {
        if (isAbort(e)) return;
        note.textContent = `Cannot read the catalog: ${errorText(e)}`;
        note.hidden = false;
        return;
      }
      const all = JSON.stringify(data);
      if (all === last) return;
      last = all;
      const scenarios = data.scenarios || [];
      note.textContent = scenarios.length ? "" : `No scenario in ${data.dir}/ yet: drop a .rhai file there, it shows up here.`;
      note.hidden = !note.textContent;
      const old = new Map([...list.children].map((s) => [s.dataset.name, s]));
      const next = scenarios.map((s) => {
        const key = JSON.stringify(s);
        const prev = old.get(s.name);
        if (prev && keys.get(prev) === key) return prev;
        const fresh = scenarioSection(s, sc);
        keys.set(fresh, key);
        if (prev) carryOver(prev, fresh);
        return fresh;
      });
      // Remove what left, then insert the new ones in place; kept sections never move.
      const keep = new Set(next);
      for (const s of [...list.children]) if (!keep.has(s)) s.remove();
      let cursor = list.firstElementChild;
      for (const s of next) {
        if (s === cursor) cursor = cursor.nextElementSibling;
        else list.insertBefore(s, cursor);
      }
    };
  }

  /** Copies the fields a user changed (and the focus) from a replaced section to its successor. */
  function carryOver(prev, fresh) {
    const focused = prev.contains(document.activeElement) ? document.activeElement.name : null;
    for (const old of prev.querySelectorAll("[data-dirty]")) {
      const twin = fresh.querySelector(`[name="${CSS.escape(old.name)}"]`);
      if (!twin || twin.type !== old.type) continue;
      if (old.type === "checkbox") twin.checked = old.checked;
      else twin.value = old.value;
      twin.dataset.dirty = "1";
    }
    if (focused) fresh.querySelector(`[name="${CSS.escape(focused)}"]`)?.focus();
  }

  function scenarioSection(s, sc) {
    const section = h("section", { class: `scenario${s.valid ? "" : " invalid"}`, "data-name": s.name },
      h("h3", {}, s.name),
      s.description ? h("p", { class: "description" }, s.description) : null,
      h("p", { class: "file" }, s.file));
    if (!s.valid) {
      const e = s.error || {};
      const at = `${s.file}${e.line != null ? `:${e.line}` : ""}${e.column != null ? `:${e.column}` : ""}`;
      section.append(h("p", { class: "error" }, `${at}: ${e.message || "invalid"}`));
      return section;
    }
    const form = h("form", { class: "run-form", novalidate: true },
      (s.params || []).length ? h("fieldset", { class: "params" }, h("legend", {}, "Parameters"), s.params.map(paramField)) : null,
      runControls(s.guards || []),
      h("p", { class: "form-error", role: "alert", hidden: true }),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "start" }, "Start")));
    trackDirty(form);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const error = form.querySelector(".form-error");
      try {
        const params = {};
        for (const input of form.querySelectorAll("[data-param]")) params[input.name] = paramValue(input);
        startRun(sc, { scenario: s.name, params, ...readControls(form) }, form);
      } catch (e) {
        showFormError(error, e.message);
      }
    });
    section.append(form);
    return section;
  }

  /** One input per declared parameter, typed by its default. */
  function paramField(p) {
    const d = p.default;
    let input;
    if (typeof d === "boolean") {
      input = h("input", { type: "checkbox", name: p.name, checked: d, "data-param": "bool" });
    } else if (typeof d === "number") {
      const int = Number.isInteger(d);
      input = h("input", { type: "number", name: p.name, value: d, step: int ? "1" : "any", "data-param": int ? "int" : "float" });
    } else {
      input = h("input", { type: "text", name: p.name, value: d ?? "", "data-param": "string", spellcheck: "false" });
    }
    return field(p.name, input, p.description, typeof d === "boolean");
  }

  function field(label, input, help, check = false) {
    const name = h("span", { class: "label" }, label);
    return h("label", { class: `field${check ? " check" : ""}` },
      check ? [input, name] : [name, input], help ? h("small", { class: "help" }, help) : null);
  }

  /** Form text → the JSON type of the parameter's default. */
  function paramValue(input) {
    const kind = input.dataset.param;
    if (kind === "bool") return input.checked;
    if (kind === "string") return input.value;
    const raw = input.value.trim();
    const n = Number(raw);
    if (raw === "" || !Number.isFinite(n)) throw new Error(`${input.name} needs a number`);
    return n;
  }

  /** dry_run, timeout_seconds and guards: shared by the scenario forms and the script panel. */
  function runControls(headerGuards) {
    return h("fieldset", { class: "run-controls" }, h("legend", {}, "Run"),
      field("dry run", h("input", { type: "checkbox", name: "dry_run", "data-control": "" }),
        "faults are only recorded; nothing is broken", true),
      field("timeout_seconds", h("input", { type: "number", name: "timeout_seconds", value: "900", min: "1", max: "3600", step: "1", "data-control": "" }),
        "1 to 3600; past it the run ends timed_out"),
      headerGuards.length ? h("div", { class: "header-guards" },
        h("span", { class: "label" }, "Header guards (always applied)"),
        h("ul", {}, headerGuards.map((g) => h("li", { title: guardJson(g) }, guardText(g))))) : null,
      field("guards", h("textarea", { name: "guards", rows: "2", spellcheck: "false", placeholder: '[{"error_rate_pct": 5}]', "data-control": "" }),
        "optional JSON array of guards: p95_ms, error_rate_pct, window_s, min_requests, unhealthy_s"));
  }

  function readControls(form) {
    const control = (name) => form.querySelector(`[data-control][name="${name}"]`);
    const rawTimeout = control("timeout_seconds").value.trim();
    const timeout = Number(rawTimeout);
    if (rawTimeout === "" || !Number.isInteger(timeout)) throw new Error("timeout_seconds needs a whole number of seconds (1 to 3600)");
    const body = { dry_run: control("dry_run").checked, timeout_seconds: timeout };
    const rawGuards = control("guards").value.trim();
    if (rawGuards) {
      let guards;
      try {
        guards = JSON.parse(rawGuards);
      } catch (e) {
        throw new Error(`guards is not valid JSON: ${e.message}`);
      }
      if (guards && typeof guards === "object" && !Array.isArray(guards)) guards = [guards];
      if (!Array.isArray(guards)) throw new Error('guards must be a JSON array, like [{"error_rate_pct": 5}]');
      body.guards = guards;
    }
    return body;
  }

  function trackDirty(form) {
    const mark = (ev) => ev.target.name && (ev.target.dataset.dirty = "1");
    form.addEventListener("input", mark);
    form.addEventListener("change", mark);
  }

  function showFormError(box, text) {
    box.textContent = text;
    box.hidden = !text;
  }

  /** POST /chaos/run; on 202 go to the run. Errors land in the form's .form-error. */
  async function startRun(sc, body, form, onError) {
    const box = form.querySelector(".form-error");
    const button = form.querySelector("button[type=submit]");
    showFormError(box, "");
    button.disabled = true;
    try {
      const r = await api("POST", "/chaos/run", body, { signal: sc.signal });
      navigate(`/console/runs/${enc(r.run_id)}`);
    } catch (e) {
      if (isAbort(e)) return;
      showFormError(box, errorText(e));
      if (onError) onError(e);
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- script panel

  let scriptDraft = ""; // survives re-renders (token entered, navigation back)

  function scriptPanel(sc) {
    const textarea = h("textarea", { id: "script", rows: "14", wrap: "off", spellcheck: "false",
      "aria-label": "Rhai script", placeholder: 'log("baseline");\nlet h = health();\nexpect(h.ok, "healthy");' });
    textarea.value = scriptDraft;
    const gutter = h("pre", { id: "script-gutter", class: "gutter", "aria-hidden": "true" });
    const problems = h("div", { id: "script-problems", class: "problems", "aria-live": "polite" });
    const form = h("form", { id: "script-form", novalidate: true },
      h("div", { class: "editor" }, gutter, textarea),
      problems,
      runControls([]),
      h("p", { class: "form-error", role: "alert", hidden: true }),
      h("div", { class: "buttons" },
        h("button", { type: "button", id: "check-script" }, "Check"),
        h("button", { type: "submit", id: "run-script", class: "primary" }, "Run script")));
    let marks = new Map(); // line → message

    const drawGutter = () => {
      const n = textarea.value.split("\n").length;
      const lines = [];
      for (let i = 1; i <= n; i++) {
        lines.push(marks.has(i) ? h("span", { class: "bad", title: marks.get(i) }, i) : String(i), "\n");
      }
      gutter.replaceChildren(...lines);
      gutter.scrollTop = textarea.scrollTop;
    };
    const mark = (list) => {
      marks = new Map(list.filter((p) => p.line != null).map((p) => [p.line, p.message]));
      drawGutter();
    };
    /** Selects line `n` of the script and scrolls it into view. */
    const goToLine = (n) => {
      const lines = textarea.value.split("\n");
      const start = lines.slice(0, n - 1).reduce((a, l) => a + l.length + 1, 0);
      textarea.focus();
      textarea.setSelectionRange(start, start + (lines[n - 1] || "").length);
      const lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 20;
      textarea.scrollTop = Math.max(0, (n - 3) * lineHeight);
    };

    textarea.addEventListener("input", () => {
      scriptDraft = textarea.value;
      problems.replaceChildren(); // stale once the script changes
      mark([]);
    });
    textarea.addEventListener("scroll", () => (gutter.scrollTop = textarea.scrollTop));
    drawGutter();

    problems.addEventListener("click", (ev) => {
      const p = ev.target.closest("[data-line]");
      if (p) goToLine(Number(p.dataset.line));
    });

    form.querySelector("#check-script").addEventListener("click", async () => {
      problems.replaceChildren(h("p", { class: "note" }, "checking…"));
      try {
        const r = await api("POST", "/chaos/check", textarea.value, { signal: sc.signal });
        const list = r.problems || [];
        mark(list);
        fill(problems,
          r.ok ? h("p", { class: "ok" }, "ok") : null,
          list.length ? h("ul", {}, list.map((p) => h("li", { class: "problem", "data-line": p.line ?? false },
            p.line != null ? `line ${p.line}${p.column != null ? `, column ${p.column}` : ""}: ${p.message}` : p.message))) : null);
      } catch (e) {
        if (!isAbort(e)) problems.replaceChildren(h("p", { class: "error" }, errorText(e)));
      }
    });

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      try {
        startRun(sc, { script: textarea.value, ...readControls(form) }, form, (e) => {
          if (e.body && e.body.line != null) mark([{ line: e.body.line, message: e.body.detail }]);
        });
      } catch (e) {
        showFormError(form.querySelector(".form-error"), e.message);
      }
    });

    return h("section", { id: "script-panel", class: "panel" },
      h("h2", {}, "Script"),
      h("p", { class: "note" }, "Paste a Rhai script (see docs/scenarios.md). Check compiles it and looks for unknown " +
        "functions without running anything; Run script starts it like a scenario."),
      form);
  }

  // ---------------------------------------------------------------- history

  const filters = { status: "all", scenario: "all" }; // kept across re-renders
  const SCRIPT = "(script)"; // the scenario filter's value for runs of a posted script

  function historyPanel() {
    const status = h("select", { id: "filter-status", "aria-label": "filter by status" },
      h("option", { value: "all" }, "all statuses"), STATUSES.map((s) => h("option", { value: s }, s)));
    const scenario = h("select", { id: "filter-scenario", "aria-label": "filter by scenario" },
      h("option", { value: "all" }, "all scenarios"));
    status.value = filters.status;
    const table = h("table", { id: "runs-table" },
      h("thead", {}, h("tr", {}, ["Run", "Scenario", "Status", "Verdict", "Dry run", "Started", "Duration", ""].map((t) => h("th", {}, t)))),
      h("tbody"));
    const panel = h("section", { id: "history", class: "panel" },
      h("h2", {}, "History"),
      h("div", { class: "filters" },
        h("label", {}, "Status ", status), h("label", {}, "Scenario ", scenario)),
      h("p", { id: "history-note", class: "note", hidden: true }),
      h("div", { class: "table-wrap" }, table));
    for (const [key, select] of [["status", status], ["scenario", scenario]]) {
      select.addEventListener("change", () => {
        filters[key] = select.value;
        renderHistory(panel);
      });
    }
    table.addEventListener("click", (ev) => {
      const b = ev.target.closest("button.report");
      if (b) openReport(b.dataset.runId);
    });
    panel.runs = null;
    return panel;
  }

  function historyRefresher(sc, panel) {
    const note = panel.querySelector("#history-note");
    let last = "";
    return async () => {
      try {
        const data = await api("GET", "/chaos/runs", undefined, { signal: sc.signal });
        note.hidden = true;
        const key = JSON.stringify(data);
        if (key === last) return;
        last = key;
        panel.runs = data.runs || [];
        renderHistory(panel);
      } catch (e) {
        if (isAbort(e)) return;
        note.textContent = `Cannot read the runs: ${errorText(e)}`;
        note.hidden = false;
      }
    };
  }

  function renderHistory(panel) {
    const runs = panel.runs || [];
    // The scenario filter offers the names present (and keeps the chosen one).
    const names = [...new Set(runs.map((r) => r.scenario ?? SCRIPT))].sort();
    if (filters.scenario !== "all" && !names.includes(filters.scenario)) names.push(filters.scenario);
    const select = $("filter-scenario");
    fill(select, h("option", { value: "all" }, "all scenarios"),
      names.map((n) => h("option", { value: n }, n === SCRIPT ? "script" : n)));
    select.value = filters.scenario;

    const shown = runs.filter((r) => (filters.status === "all" || r.status === filters.status) &&
      (filters.scenario === "all" || (r.scenario ?? SCRIPT) === filters.scenario));
    const rows = shown.map((r) => {
      const duration = r.ended_at
        ? fmtDuration((Date.parse(r.ended_at) - Date.parse(r.started_at)) / 1000)
        : r.status === "running" ? "running" : "—";
      return h("tr", { class: "run-row", "data-run-id": r.run_id, "data-status": r.status },
        // <wbr>: a narrow screen may wrap the id after its time part.
        h("td", {}, h("a", { href: `/console/runs/${enc(r.run_id)}`, class: "run-link" },
          r.run_id.replace(/-.*/, "-"), h("wbr"), r.run_id.replace(/^[^-]*-/, ""))),
        h("td", { class: "scenario-name" }, r.scenario ?? "script"),
        h("td", {}, badge(r.status)),
        h("td", { class: `verdict verdict-${r.verdict}` }, r.verdict ?? "—"),
        h("td", {}, r.dry_run ? "yes" : "no"),
        h("td", { class: "started", title: r.started_at }, fmtTime(r.started_at)),
        h("td", {}, duration),
        h("td", {}, h("button", { type: "button", class: "report", "data-run-id": r.run_id }, "report")));
    });
    if (!rows.length) {
      rows.push(h("tr", { class: "empty" }, h("td", { colspan: "8" }, runs.length ? "No run matches the filters." : "No run yet.")));
    }
    panel.querySelector("tbody").replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- run view

  /** The run view's skeleton; returns the elements the renderers fill. */
  function runSkeleton(id) {
    const list = (tag, elId, title) => h("section", { class: "panel" }, h("h3", {}, title), h(tag, { id: elId, class: "items" }));
    const ui = {
      root: h("section", { id: "run", "data-run-status": "unknown" },
        h("div", { class: "panel run-head" },
          h("div", { class: "run-title" },
            h("h2", {}, "Run ", h("code", { id: "run-id" }, id)),
            badge("unknown", "run-status"),
            h("span", { id: "run-verdict", class: "verdict" })),
          h("p", { id: "run-meta", class: "meta" }),
          h("p", { id: "run-reason", class: "reason" }),
          h("p", { id: "run-error", class: "error", hidden: true }),
          h("div", { id: "run-notes", class: "note", hidden: true }),
          h("div", { class: "buttons" },
            h("button", { type: "button", id: "cancel-run", class: "danger", hidden: true }, "Cancel"),
            h("button", { type: "button", id: "open-report" }, "Report"),
            h("a", { href: "/console" }, "← Catalog & runs"))),
        h("div", { id: "breach", class: "panel breach", role: "alert", hidden: true }),
        h("div", { id: "timeline", class: "panel timeline-box" }, h("p", { class: "note" }, "timeline…")),
        list("ol", "steps", "Steps"),
        list("ol", "logs", "Logs"),
        h("div", { class: "run-grid" },
          list("ul", "expectations", "Expectations"),
          list("ul", "measurements", "Measurements"),
          list("ul", "undo", "Undo"),
          list("ul", "run-guards", "Guards"))),
      stepItems: new Map(), // seq → its <li>
    };
    // ui.runStatus, ui.cancelRun, ui.steps, …: every element with an id, by camel-cased id.
    for (const el of ui.root.querySelectorAll("[id]")) ui[el.id.replace(/-(.)/g, (_, c) => c.toUpperCase())] = el;
    return ui;
  }

  async function runView(sc, id) {
    document.title = `run ${id} · chaos-lab console`;
    const ui = runSkeleton(id);
    const st = { status: "unknown", finished: false };
    $("view").append(ui.root);
    ui.openReport.addEventListener("click", () => openReport(id));
    ui.cancelRun.addEventListener("click", () => cancelRun(sc, ui, st, id));

    let report = null;
    try {
      report = await api("GET", `/chaos/runs/${enc(id)}`, undefined, { signal: sc.signal });
      renderReport(ui, st, report);
    } catch (e) {
      if (isAbort(e)) return;
      if (e.status === 404) {
        ui.root.replaceChildren(h("section", { class: "panel" }, h("p", { class: "error" }, errorText(e)),
          h("a", { href: "/console" }, "← Catalog & runs")));
        ui.root.dataset.runStatus = "unknown";
        return;
      }
      note(ui, `Cannot read the run: ${errorText(e)}`);
      if (e.status === 401) return; // the token form re-renders the view
    }
    const first = loadTimeline(sc, ui, id);
    if (!report || report.status === "running") {
      st.status = "running";
      follow(sc, ui, st, id);
      first.then(() => timelineLoop(sc, ui, st, id));
    }
    await first;
  }

  function note(ui, text) {
    ui.runNotes.hidden = false;
    ui.runNotes.append(h("div", {}, text));
  }

  /** GET timeline.svg into #timeline (server-generated and escaped markup). */
  async function loadTimeline(sc, ui, id) {
    try {
      const svg = await api("GET", `/chaos/runs/${enc(id)}/timeline.svg`, undefined, { as: "text", accept: "image/svg+xml", signal: sc.signal });
      ui.timeline.innerHTML = svg.replace(/^\s*<\?xml[^>]*>\s*/, "");
    } catch (e) {
      if (!isAbort(e) && !ui.timeline.querySelector("svg")) {
        ui.timeline.replaceChildren(h("p", { class: "note" }, `No timeline: ${errorText(e)}`));
      }
    }
  }

  /** Refreshes the timeline every second while the run is running, then once more. */
  async function timelineLoop(sc, ui, st, id) {
    while (st.status === "running") {
      if (!(await sc.sleep(TIMELINE_EVERY_MS))) return;
      await loadTimeline(sc, ui, id);
    }
    if (sc.alive) await loadTimeline(sc, ui, id);
  }

  /** Follows GET /chaos/runs/{id}/events until run_finished, reconnecting after a drop. Each
   *  connection replays the run from its start, so the live lists are rebuilt from scratch. */
  async function follow(sc, ui, st, id) {
    while (sc.alive && !st.finished) {
      try {
        const res = await api("GET", `/chaos/runs/${enc(id)}/events`, undefined,
          { as: "response", accept: "text/event-stream", signal: sc.signal });
        let fresh = true;
        await readSse(res, (name, data) => {
          if (fresh) {
            clearLive(ui);
            fresh = false;
          }
          onEvent(sc, ui, st, id, name, data);
        });
      } catch (e) {
        if (isAbort(e) || e.status === 401 || e.status === 404) return;
      }
      if (!st.finished && !(await sc.sleep(RECONNECT_MS))) return;
    }
  }

  /** Reads a Server-Sent Events body; calls onEvent(name, parsed data) per event. Lines and
   *  events may be split across chunks; ":" lines are keep-alives. */
  async function readSse(res, onEvent) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let name = "";
    let data = [];
    const line = (l) => {
      if (l === "") {
        if (data.length) {
          let parsed;
          try {
            parsed = JSON.parse(data.join("\n"));
          } catch {
            parsed = null;
          }
          if (parsed !== null) onEvent(name || "message", parsed);
        }
        name = "";
        data = [];
        return;
      }
      if (l.startsWith(":")) return;
      const colon = l.indexOf(":");
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? "" : l.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    };
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        line(buffer.slice(0, nl).replace(/\r$/, ""));
        buffer = buffer.slice(nl + 1);
      }
      if (done) break;
    }
    // An event cut off by the end of the stream is dropped, as EventSource does.
  }

  function onEvent(sc, ui, st, id, name, d) {
    switch (name) {
      case "run_started": renderHead(ui, st, d); break; // a summary: keeps what the report said
      case "step_started":
      case "step_finished": upsertStep(ui, d); break;
      case "log": ui.logs.append(logItem(d)); break;
      case "expect": ui.expectations.append(expectItem(d)); break;
      case "measurement": setMeasurement(ui, d.name, d.value); break;
      case "undo": ui.undo.append(undoItem(d)); break;
      case "breach": showBreach(ui, d); break;
      case "lagged":
        note(ui, `The stream skipped ${d.missed_events ?? "some"} event(s)${d.reason ? ` (${d.reason})` : ""}; the final report has them.`);
        break;
      case "run_finished":
        st.finished = true;
        setStatus(ui, st, d.status, d.verdict, d.reason);
        finalize(sc, ui, st, id, d);
        break;
      default: break;
    }
  }

  /** The run ended: render its final state from GET /chaos/runs/{id}, and redraw the timeline
   *  now rather than at the next tick (its last bands have just closed). */
  async function finalize(sc, ui, st, id, fallback) {
    loadTimeline(sc, ui, id);
    try {
      renderReport(ui, st, await api("GET", `/chaos/runs/${enc(id)}`, undefined, { signal: sc.signal }));
    } catch (e) {
      if (isAbort(e)) return;
      if (fallback && fallback.steps) renderReport(ui, st, fallback);
      else note(ui, `Cannot read the final report: ${errorText(e)}`);
    }
  }

  async function cancelRun(sc, ui, st, id) {
    const b = ui.cancelRun;
    b.disabled = true;
    b.textContent = "Cancelling…";
    try {
      // The answer is the report; the stream's run_finished renders the rest of it.
      const r = await api("POST", `/chaos/runs/${enc(id)}/cancel`, undefined, { signal: sc.signal });
      if (r && r.status && r.status !== "running") setStatus(ui, st, r.status, r.verdict, r.reason);
    } catch (e) {
      if (!isAbort(e)) note(ui, `Cancel: ${errorText(e)}`);
    } finally {
      b.disabled = false;
      b.textContent = "Cancel";
    }
  }

  function clearLive(ui) {
    for (const el of [ui.steps, ui.logs, ui.expectations, ui.measurements, ui.undo]) el.replaceChildren();
    ui.stepItems = new Map();
    ui.breach.hidden = true;
  }

  function setStatus(ui, st, status, verdict, reason) {
    st.status = status;
    ui.root.dataset.runStatus = status;
    ui.runStatus.textContent = status;
    ui.runStatus.className = `badge status-${status}`;
    ui.runVerdict.textContent = verdict ? `verdict: ${verdict}` : "";
    ui.runVerdict.className = `verdict verdict-${verdict}`;
    ui.runReason.textContent = reason || (status === "running" ? "running…" : "");
    ui.cancelRun.hidden = status !== "running";
  }

  /** Header fields from a summary or a report. */
  function renderHead(ui, st, fields) {
    const r = (st.head = { ...st.head, ...fields });
    setStatus(ui, st, r.status, r.verdict, r.reason);
    const params = r.params && Object.keys(r.params).length ? `params ${JSON.stringify(r.params)}` : null;
    ui.runMeta.textContent = [
      r.scenario ? `scenario ${r.scenario}` : "script",
      r.dry_run ? "dry run" : null,
      `started ${fmtTime(r.started_at, true)}`,
      r.duration_s != null ? `took ${fmtDuration(r.duration_s)}` : null,
      r.timeout_seconds != null ? `timeout ${r.timeout_seconds} s` : null,
      r.replica ? `replica ${r.replica}` : null,
      params,
    ].filter(Boolean).join(" · ");
  }

  /** The whole run from a report (initial state, final state). */
  function renderReport(ui, st, r) {
    renderHead(ui, st, r);
    if (r.status !== "running") st.finished = true;
    clearLive(ui);
    for (const s of r.steps || []) upsertStep(ui, s);
    ui.logs.append(...(r.logs || []).map(logItem));
    ui.expectations.append(...(r.expectations || []).map(expectItem));
    for (const [k, v] of Object.entries(r.measurements || {})) setMeasurement(ui, k, v);
    ui.undo.append(...(r.undo || []).map(undoItem),
      ...(r.recovered || []).map((x) => h("li", { class: `undo recovered ${x.ok ? "ok" : "failed"}` },
        `at the next start: ${x.kind} ${x.target}: ${x.detail}`)));
    ui.runGuards.replaceChildren(...(r.guards || []).map((g) => h("li", { title: guardJson(g) }, guardText(g))));
    if (r.breach) showBreach(ui, r.breach);
    const e = r.error;
    ui.runError.hidden = !e;
    if (e) ui.runError.textContent = `script error${e.line != null ? ` at line ${e.line}${e.column != null ? `, column ${e.column}` : ""}` : ""}: ${e.message}`;
    if (r.truncated) note(ui, `Footprint limits dropped some records: ${JSON.stringify(r.truncated)}`);
    renderImpact(ui, r.impact);
  }

  function upsertStep(ui, s) {
    const items = ui.stepItems;
    const state = s.ended_at == null ? "running" : s.error ? "failed" : "ok";
    const li = h("li", { class: `step ${state}`, "data-seq": s.seq },
      h("span", { class: "call" }, `line ${s.line ?? "?"}: ${s.name}(${s.args})`),
      h("span", { class: "offset" }, ` +${Number(s.offset_s).toFixed(2)} s`),
      state === "running" ? h("span", { class: "outcome" }, " …") : h("span", { class: "outcome" },
        ` → ${s.error ? `error: ${s.error}` : s.outcome ?? "done"}`,
        s.duration_ms != null ? ` (${fmtDuration(s.duration_ms / 1000)})` : ""));
    const prev = items.get(s.seq);
    if (prev) prev.replaceWith(li);
    else {
      // Keep seq order even if a replay interleaves.
      const after = [...items.entries()].filter(([seq]) => seq > s.seq).sort((a, b) => a[0] - b[0])[0];
      ui.steps.insertBefore(li, after ? after[1] : null);
    }
    items.set(s.seq, li);
  }

  const logItem = (l) => h("li", { class: "log" },
    h("span", { class: "offset" }, `+${Number(l.offset_s).toFixed(2)} s`), " ",
    l.line != null ? h("span", { class: "line" }, `line ${l.line}`) : null, " ", l.message);

  const expectItem = (x) => h("li", { class: `expectation ${x.ok ? "ok" : "failed"}` },
    h("span", { class: "mark" }, x.ok ? "ok" : "failed"), " ", x.message, x.line != null ? ` (line ${x.line})` : "");

  const undoItem = (u) => h("li", { class: `undo ${u.ok ? "ok" : "failed"}` },
    h("span", { class: "mark" }, u.ok ? "ok" : "failed"), " ", u.action, ": ", u.detail,
    h("span", { class: "offset" }, ` at ${fmtTime(u.at)}`));

  function setMeasurement(ui, name, value) {
    const li = h("li", { class: "measurement", "data-name": name },
      h("span", { class: "name" }, name), " = ", h("span", { class: "value" }, fmtValue(value)));
    const prev = [...ui.measurements.children].find((x) => x.dataset.name === name);
    if (prev) prev.replaceWith(li);
    else ui.measurements.append(li);
  }

  function showBreach(ui, b) {
    ui.breach.hidden = false;
    fill(ui.breach,
      h("h3", {}, "Guard breached: the run was aborted and every fault undone"),
      h("p", {}, h("span", { class: "metric" }, b.metric), ` was ${b.observed} against ${b.threshold}`,
        ` (${b.requests} request(s) in the window, at +${Number(b.offset_s).toFixed(1)} s, ${fmtTime(b.at)})`),
      b.guard ? h("p", { class: "note" }, `guard: ${guardText(b.guard)}`) : null);
  }

  function renderImpact(ui, m) {
    ui.root.querySelector("#impact")?.remove();
    if (!m) return;
    const num = (v, unit) => (v == null ? "—" : `${v}${unit}`);
    const rows = [
      ["time to detect", m.time_to_detect_s == null ? "not detected" : `${m.time_to_detect_s} s (by ${m.detected_by})`],
      ["time to recover", m.time_to_recover_s == null ? "did not recover while measured" : `${m.time_to_recover_s} s`],
      ["requests", m.requests], ["failures", m.failures],
      ["error rate", num(m.error_rate_pct, " %")],
      ["error budget burned", num(m.error_budget_burned_pct, " %")],
      ["unhealthy", num(m.unhealthy_s, " s")],
    ];
    ui.timeline.after(h("section", { id: "impact", class: "panel impact" }, h("h3", {}, "Impact"),
      h("dl", { class: "kv" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]))));
  }

  // ---------------------------------------------------------------- start

  function boot() {
    $("kill-switch").addEventListener("click", killSwitch);
    $("resume").addEventListener("click", resume);
    // Console links move with pushState; modified clicks (new tab) keep the browser's way.
    document.addEventListener("click", (ev) => {
      const a = ev.target.closest("a[href]");
      if (!(a instanceof HTMLAnchorElement) || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey || a.target) return;
      const url = new URL(a.href, location.href);
      if (url.origin !== location.origin || !/^\/console(\/|$)/.test(url.pathname)) return;
      ev.preventDefault();
      navigate(url.pathname);
    });
    window.addEventListener("popstate", route);
    const forever = scope();
    statusReady = poll(forever, STATUS_EVERY_MS, refreshStatus);
    setInterval(updateStatusNote, 1000);
    route();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
