// The review console. Every string from the service is put into the page as text (textContent,
// createTextNode), never as markup: logged texts are hostile wherever they are shown.
"use strict";

const KEY = "emotion-ops-key";
let me = null; // whoami: the key's name and role

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (id) => document.getElementById(id);
const percent = (value) => (value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)} %`);
const number = (value, digits = 4) =>
  value === null || value === undefined ? "–" : Number(value).toPrecision(digits);

function say(message, isError) {
  $("error").textContent = isError ? message : "";
  $("notice").textContent = isError ? "" : message;
}

async function api(path, options = {}) {
  const headers = { "x-api-key": sessionStorage.getItem(KEY) || "" };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "omit",
    cache: "no-store",
  });
  let payload = null;
  try {
    payload = await response.json();
  } catch (error) {
    payload = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) {
    signOut("that key was not accepted");
    throw new Error(payload.error);
  }
  if (!response.ok) throw new Error(payload.error || `${response.status}`);
  return payload;
}

function table(headers, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headers.map((header) => el("th", {}, header)))),
    el("tbody", {}, rows),
  );
}

function link(text, hash) {
  return el("a", { href: hash }, text);
}

// ---- timeline -------------------------------------------------------------------------------

async function timelinePage(page) {
  const { events } = await api("/console/api/timeline");
  page.append(el("h2", {}, "Timeline"));
  if (!events.length) {
    page.append(el("p", {}, "Nothing yet: no drift report, no version registered."));
    return;
  }
  const rows = events.map((event) => {
    const links = event.links || {};
    const related = [];
    if (links.report) related.push(link(`report ${links.report.slice(0, 19)}`, `#report/${links.report}`));
    if (links.version) related.push(link(`version ${links.version}`, "#versions"));
    if (links.retrain) related.push(link(`retrain → version ${links.retrain}`, "#versions"));
    if (links.labels) related.push(link("labels screened", "#labels"));
    if (links.shadow) related.push(link("its shadow", "#shadow"));
    if (links.previous) related.push(`previous: version ${links.previous}`);
    return el(
      "tr",
      { "data-kind": event.kind },
      el("td", {}, event.at || ""),
      el("td", {}, el("span", { class: `kind kind-${event.kind}` }, event.kind)),
      el("td", {}, event.title),
      el("td", { class: "text" }, event.detail || ""),
      el("td", {}, event.status || ""),
      el("td", {}, related.map((item, index) => [index ? " · " : "", item])),
    );
  });
  page.append(table(["when", "what", "", "detail", "status", "links"], rows));
}

// ---- one report -----------------------------------------------------------------------------

function chart(history) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 520, height = 140, pad = 28;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "novel share against expected, recent reports");
  const points = history.filter((item) => item.share !== null && item.share !== undefined);
  const top = Math.max(0.01, ...points.map((p) => Math.max(p.share, p.expected || 0))) * 1.15;
  const x = (i) => pad + (points.length < 2 ? 0 : (i * (width - 2 * pad)) / (points.length - 1));
  const y = (v) => height - pad - (v / top) * (height - 2 * pad);
  for (const [field, css] of [["share", "share"], ["expected", "expected"]]) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", css);
    line.setAttribute("points", points.map((p, i) => `${x(i)},${y(p[field] || 0)}`).join(" "));
    svg.append(line);
    for (const [i, p] of points.entries()) {  // a dot per report: one report is a point, not a line
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("class", css);
      dot.setAttribute("cx", x(i));
      dot.setAttribute("cy", y(p[field] || 0));
      dot.setAttribute("r", 3);
      svg.append(dot);
    }
  }
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 12);
  label.textContent = `novel share (solid) vs expected (dashed), last ${points.length} reports; top ${percent(top)}`;
  svg.append(label);
  return svg;
}

async function reportPage(page, id) {
  const report = await api(`/console/api/reports/${encodeURIComponent(id)}`);
  const verdictClass = report.verdict === "drift" ? "verdict-drift" : "verdict-no-drift";
  page.append(
    el("h2", {}, "Drift report ", el("span", { class: verdictClass, id: "verdict" }, report.verdict)),
    el("p", {}, `${report.id} · ${report.created_at} · judged version `, link(report.model_version, "#versions"),
      ` · status ${report.status}`, report.acked_by ? ` (acknowledged by ${report.acked_by})` : ""),
    el("p", {}, `trigger: ${report.decision || "–"}: ${report.decision_reason || ""}`),
    el("p", { class: "text" }, `action: ${report.action || "none"}`,
      report.retrain_version ? [" → ", link(`version ${report.retrain_version}`, "#versions")] : ""),
  );
  const tests = Object.entries(report.tests || {}).map(([name, test]) =>
    el("tr", {}, el("td", {}, name), el("td", {}, number(test.p_value)), el("td", {}, number(test.alpha)),
      el("td", {}, test.drifted ? "drift" : "no drift"),
      el("td", {}, test.share !== undefined ? percent(test.share) : ""),
      el("td", {}, test.expected_share !== undefined ? percent(test.expected_share) : "")),
  );
  page.append(el("h3", {}, "Tests"), table(["test", "p-value", "alpha", "result", "share", "expected"], tests));
  const novelty = report.novelty || {};
  const estimated = novelty.estimated_share;
  const accuracy = report.estimated_accuracy;
  const part = (name) => accuracy && accuracy[name]
    ? `${name} ${percent(accuracy[name].estimate)} (${percent(accuracy[name].low)}–${percent(accuracy[name].high)}) on ${accuracy[name].rows}`
    : null;
  page.append(
    el("h3", {}, "Novel share"),
    el("p", {}, `${percent(novelty.share)} of this window against ${percent(novelty.expected_share)} expected`),
    estimated ? el("p", { id: "novel-estimate" }, `about ${percent(estimated.estimate)} (${percent(estimated.low)}–${percent(estimated.high)}) of this window is unlike anything the model knows`) : "",
    accuracy ? el("p", { id: "estimated-accuracy" }, "accuracy estimated without labels (ATC): ",
      ["all", "familiar", "novel"].map(part).filter(Boolean).join("; ")) : "",
    chart(report.history || []),
    el("h3", {}, "Most novel rows"),
    table(["novelty", "text", "the model said"], (novelty.most_novel || []).map((row) =>
      el("tr", {}, el("td", {}, number(row.novelty, 3)), el("td", { class: "text" }, row.text), el("td", {}, row.emotion)))),
  );
  const shares = report.emotion_share || {};
  const labels = Object.keys({ ...(shares.reference || {}), ...(shares.current || {}) }).sort();
  page.append(el("h3", {}, "Label shares"), table(["label", "this window", "reference"], labels.map((name) =>
    el("tr", {}, el("td", {}, name), el("td", {}, percent((shares.current || {})[name] || 0)),
      el("td", {}, percent((shares.reference || {})[name] || 0))))));
  if (me.may_act && report.status === "open") {
    const note = el("input", { id: "ack-note", size: 50, placeholder: "what you concluded", maxlength: 1000 });
    page.append(el("p", {}, note, " ", el("button", { id: "ack", class: "primary", type: "button", onclick: async () => {
      await act(() => api(`/console/api/reports/${encodeURIComponent(report.id)}/ack`, { method: "POST", body: { note: note.value || null } }),
        "report acknowledged");
    } }, "Acknowledge")));
  }
  if (report.page) {
    page.append(el("h3", {}, "Evidently report"),
      el("iframe", { class: "report", id: "evidently", sandbox: "allow-scripts", referrerpolicy: "no-referrer", src: report.page, title: "Evidently report" }));
  }
}

// ---- versions -------------------------------------------------------------------------------

function card(title, version) {
  if (!version) return el("div", { class: "card" }, el("h3", {}, title), el("p", {}, "none"));
  const groups = Object.entries(version.groups).filter(([, tags]) => Object.keys(tags).length);
  return el("div", { class: "card", id: `card-${title}` },
    el("h3", {}, `${title}: version ${version.version}`),
    el("p", {}, `registered ${version.created}; aliases ${version.aliases.join(", ") || "none"}`),
    groups.map(([group, tags]) => [el("h4", {}, group),
      el("dl", {}, Object.entries(tags).map(([key, value]) => [el("dt", {}, key), el("dd", {}, value)]))]));
}

async function versionsPage(page) {
  const cards = await api("/console/api/versions");
  page.append(el("h2", {}, "Versions"), el("div", { class: "cards" },
    card("champion", cards.champion), card("challenger", cards.challenger)));
  const buttons = [];
  if (me.may_act && cards.can_approve) {
    buttons.push(el("button", { id: "promote", class: "primary", type: "button", onclick: async () => {
      if (!confirm(`Make version ${cards.challenger.version} the champion?`)) return;
      await act(() => api("/console/api/promote", { method: "POST", body: { version: cards.challenger.version } }),
        `version ${cards.challenger.version} is champion`);
    } }, `Promote version ${cards.challenger.version}`));
  }
  if (me.may_act && cards.can_rollback) {
    buttons.push(el("button", { id: "rollback", class: "danger", type: "button", onclick: async () => {
      if (!confirm(`Roll back from version ${cards.champion.version}?`)) return;
      await act(() => api("/console/api/rollback", { method: "POST", body: { version: cards.champion.version } }),
        "rolled back");
    } }, `Roll back version ${cards.champion.version}`));
  }
  if (buttons.length) page.append(el("p", {}, buttons.map((b, i) => [i ? " " : "", b])));
  else if (!me.may_act) page.append(el("p", {}, "Promoting and rolling back need an admin key."));
  page.append(el("h3", {}, "Every version"), table(["version", "aliases", "registered", "gate"],
    cards.versions.map((v) => el("tr", {}, el("td", {}, v.version), el("td", {}, v.aliases.join(", ")),
      el("td", {}, v.created), el("td", {}, v.decision)))));
}

// ---- labels ---------------------------------------------------------------------------------

async function labelsPage(page, query) {
  const params = new URLSearchParams(query);
  const status = params.get("status") || "quarantined";
  const view = await api(`/console/api/labels?${params.toString() || "status=quarantined"}`);
  const select = (name, options, current) => el("select", { id: `filter-${name}`, onchange: (event) => {
    const next = new URLSearchParams(params);
    if (event.target.value) next.set(name, event.target.value); else next.delete(name);
    location.hash = `#labels?${next.toString()}`;
  } }, options.map(([value, text]) => el("option", { value, selected: value === (current || "") }, text)));
  page.append(el("h2", {}, "Labels"),
    el("div", { class: "filters" },
      el("label", {}, "state ", select("status", ["quarantined", "released", "dropped", "accepted"].map((s) => [s, s]), status)),
      el("label", {}, "source ", select("source", [["", "any"], ...view.sources.map((s) => [s.source, s.source])], params.get("source"))),
      el("label", {}, "reason ", select("reason", [["", "any"], ...view.reasons.map((r) => [r, r])], params.get("reason")))),
    el("h3", {}, "Sources"),
    table(["source", "texts labelled", "labels given (last hour)", "quarantined", "agreement with the champion"], view.sources.map((s) =>
      el("tr", {}, el("td", {}, s.source), el("td", {}, s.labels), el("td", {}, `${s.given} (${s.last_hour})`),
        el("td", {}, s.quarantined), el("td", {}, percent(s.agreement))))),
    el("h3", {}, `${view.total} ${status} label(s)`));
  const boxes = [];
  const rows = view.rows.map((row) => {
    const box = el("input", { type: "checkbox", value: row.id, "aria-label": `select ${row.id}` });
    boxes.push(box);
    return el("tr", { "data-id": row.id }, el("td", {}, me.may_act && status === "quarantined" ? box : ""),
      el("td", { class: "text" }, row.text), el("td", {}, row.label), el("td", {}, row.predicted),
      el("td", {}, row.source), el("td", { class: "text" }, row.reason), el("td", {}, row.at || ""));
  });
  page.append(table(["", "text", "label", "the model said", "source", "reason", "given"], rows));
  if (me.may_act && status === "quarantined" && rows.length) {
    const settle = (action) => async () => {
      const ids = boxes.filter((box) => box.checked).map((box) => box.value);
      if (!ids.length) return say("select the rows first", true);
      await act(() => api("/console/api/labels/review", { method: "POST", body: { action, ids } }), `${ids.length} label(s) ${action === "release" ? "released" : "dropped"}`);
    };
    page.append(el("p", {}, el("button", { id: "release", class: "primary", type: "button", onclick: settle("release") }, "Release selected"),
      " ", el("button", { id: "drop", class: "danger", type: "button", onclick: settle("drop") }, "Drop selected")));
  }
}

// ---- shadow ---------------------------------------------------------------------------------

async function shadowPage(page) {
  const view = await api("/console/api/shadow");
  page.append(el("h2", {}, "Shadow"));
  if (!view.waiting) {
    const refused = view.refused ? ` Challenger version ${view.refused} was refused by the gate.` : "";
    page.append(el("p", { id: "shadow-none" }, `No challenger waits (champion: version ${view.champion_version || "none"}).${refused} ` +
      "While one waits, the service also scores a share of live traffic with it and shows it here."));
    return;
  }
  const asked = view.requirement;
  const gate = asked.min_agreement === null && asked.min_accuracy === null
    ? "The gate asks nothing of the shadow."
    : view.allows ? "The shadow's figures allow approval." : `Not yet: ${view.shortfall}`;
  page.append(
    el("p", {}, `Challenger version ${view.waiting} (${view.decision}) against champion version ${view.champion_version || "none"}, ` +
      `on ${percent(view.share)} of logged traffic.`),
    el("dl", { class: "figures" },
      el("dt", {}, "texts scored"), el("dd", { id: "shadow-rows" }, view.rows),
      el("dt", {}, "agreement with the champion"), el("dd", { id: "shadow-agreement" }, percent(view.agreement)),
      el("dt", {}, "challenger time per text (at idle priority)"),
      el("dd", {}, view.latency_ms.p50 === null ? "–" : `p50 ${view.latency_ms.p50.toFixed(2)} ms, p95 ${view.latency_ms.p95.toFixed(2)} ms`),
      el("dt", {}, "accuracy on labels that arrived"),
      el("dd", {}, view.labelled ? `challenger ${percent(view.challenger_accuracy)}, champion ${percent(view.champion_accuracy)} (${view.labelled} labels)` : "no labels yet"),
      el("dt", {}, "gate"), el("dd", { id: "shadow-gate" }, gate)),
    el("h3", {}, "Per label"),
    table(["label", "champion gives it", "challenger gives it", "champion only", "challenger only"],
      view.labels.map((row) => el("tr", {}, el("td", {}, row.label), el("td", {}, percent(row.champion_share)),
        el("td", {}, percent(row.challenger_share)), el("td", {}, row.champion_only), el("td", {}, row.challenger_only)))),
    el("h3", {}, "Where they differ most"),
    table(["text", "champion", "challenger", "distance"], view.most_different.map((row) =>
      el("tr", { class: "different" }, el("td", { class: "text" }, row.text === null ? "(not in the log)" : row.text),
        el("td", {}, row.champion), el("td", {}, row.challenger), el("td", {}, number(row.distance, 2))))));
}

// ---- shell ----------------------------------------------------------------------------------

async function act(work, done) {
  try {
    await work();
    await render();
    say(done, false);
  } catch (error) {
    say(error.message, true);
  }
}

async function render() {
  const page = $("page");
  page.replaceChildren();
  const [name, ...rest] = (location.hash.slice(1) || "timeline").split("/");
  const [pageName, query] = name.split("?");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === pageName);
  document.body.dataset.page = pageName;
  try {
    if (pageName === "report") await reportPage(page, decodeURIComponent(rest.join("/")));
    else if (pageName === "versions") await versionsPage(page);
    else if (pageName === "labels") await labelsPage(page, query || "");
    else if (pageName === "shadow") await shadowPage(page);
    else await timelinePage(page);
    document.body.dataset.rendered = pageName;
  } catch (error) {
    say(error.message, true);
    document.body.dataset.rendered = "error";
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  me = null;
  $("nav").hidden = true;
  $("page").replaceChildren();
  $("sign-in").hidden = false;
  if (message) say(message, true);
}

async function signIn() {
  try {
    me = await api("/console/api/whoami");
  } catch (error) {
    $("sign-in").hidden = false;
    say(error.message, true);
    return;
  }
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("who").textContent = `${me.key} (${me.role}) · ${me.model}, serving version ${me.serving}`;
  say("", false);
  await render();
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value);
    $("key").value = "";
    await signIn();
  });
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => me && render());
  if (sessionStorage.getItem(KEY)) signIn();
  else $("sign-in").hidden = false;
});
