// ragft web UI: runs, a run's rows, two runs compared, ask the arms. No framework, no build step.
// Every stored string (answers are model output) enters the page through textContent, never as markup.
"use strict";

const KEY = "ragft.apiKey";
const REVIEWER = "ragft.reviewer";
const PAGE = 50;
const main = document.getElementById("main");

// ---- DOM: elements from tag, properties and children; strings become text nodes
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replace `node`'s children: nested lists flattened, null / false left out, strings as text.
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
  return node;
}

function show(...nodes) {
  fill(main, ...nodes);
}

function num(x, digits = 3) {
  return x === null || x === undefined ? "-" : Number(x).toFixed(digits);
}

function signed(x, digits = 3) {
  return x === null || x === undefined ? "-" : (x >= 0 ? "+" : "") + Number(x).toFixed(digits);
}

// ---- the API, with the key from this tab's sessionStorage as the bearer header (no cookies)
class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { method: options.method || "GET", headers, body: options.body,
                                       credentials: "omit", cache: "no-store" });
  if (response.status === 401) {
    askForKey(key ? "That key was refused: enter another." : null);
    throw new Unauthorized("an API key is needed");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  if (options.raw) return response;
  if (response.status === 204) return { body: null, total: null };
  return { body: await response.json(), total: Number(response.headers.get("X-Total-Count") || NaN) };
}

function keyState() {
  document.getElementById("key-state").textContent = sessionStorage.getItem(KEY) ? "key set (this tab)" : "";
}

function askForKey(message) {
  const form = document.getElementById("key-form");
  form.hidden = false;
  if (message) document.getElementById("key-message").textContent = message;
  document.getElementById("key-input").focus();
}

function setUpKeyForm() {
  const form = document.getElementById("key-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("key-input").value.trim();
    if (value) sessionStorage.setItem(KEY, value);
    document.getElementById("key-input").value = "";
    form.hidden = true;
    keyState();
    route();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    keyState();
  });
  document.getElementById("key-toggle").addEventListener("click", () => {
    form.hidden = !form.hidden;
  });
  keyState();
}

function failure(error) {
  if (error instanceof Unauthorized) return el("p", { class: "small", text: "Enter the API key above to see this page." });
  return el("p", { class: "error", text: String(error.message || error) });
}

// A report file through the API (so the key goes along), saved by the browser.
async function download(path, filename) {
  const response = await api(path, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function fileButtons(runId, reports, prefix = "") {
  return Object.entries(reports)
    .filter(([name, present]) => present && name.startsWith(prefix) && (prefix || !name.includes("/")))
    .map(([name]) => el("button", { type: "button", class: "file", text: name,
      onclick: () => download(`/v1/results/${encodeURIComponent(runId)}/files/${name}`,
                              `${runId}-${name.replace("/", "-")}`).catch((e) => alert(e.message)) }));
}

// ---- runs
function progressText(run) {
  const p = run.job && run.job.progress;
  if (!p || !p.stage || !["queued", "training", "evaluating"].includes(run.status)) return "";
  const eta = p.eta_s === null || p.eta_s === undefined ? "" : `, ~${(p.eta_s / 60).toFixed(1)} min left`;
  return `${p.stage}: ${p.done}/${p.total}${eta}`;
}

// The runs page's compare picks (kept in this tab across its 3-s refreshes and reloads) and its one refresh timer:
// a page drawn again (a key entered, a refresh) replaces the timer instead of starting a second loop.
const PICKS = "ragft.comparePicks";
const runsPolling = { timer: null, drawn: 0 };

async function runsPage() {
  document.title = "ragft: runs";
  clearTimeout(runsPolling.timer);
  const drawing = ++runsPolling.drawn;
  let runs;
  try {
    runs = (await api("/v1/results")).body;
  } catch (error) {
    if (drawing === runsPolling.drawn) show(el("h1", { text: "Runs" }), failure(error));
    return;
  }
  if (drawing !== runsPolling.drawn) return; // a later drawing of the page took over while this one waited
  const picked = JSON.parse(sessionStorage.getItem(PICKS) || "[]").filter((id) => runs.some((r) => r.id === id));
  const compare = el("button", { type: "button", id: "compare-button", disabled: picked.length !== 2, text: "Compare the two picked runs",
    onclick: () => {
      const [a, b] = picked.slice().sort((x, y) => order.indexOf(y) - order.indexOf(x)); // older first
      location.href = `/ui/compare/${encodeURIComponent(a)}/${encodeURIComponent(b)}`;
    } });
  const order = runs.map((r) => r.id);
  const rows = runs.map((run) => el("tr", { dataset: { run: run.id } },
    el("td", {}, el("input", { type: "checkbox", class: "pick", title: "pick for comparison", disabled: !run.answers,
      checked: picked.includes(run.id),
      onchange: (event) => {
        if (event.target.checked) picked.push(run.id);
        else picked.splice(picked.indexOf(run.id), 1);
        sessionStorage.setItem(PICKS, JSON.stringify(picked));
        compare.disabled = picked.length !== 2;
      } })),
    el("td", {}, run.answers ? el("a", { href: `/ui/runs/${encodeURIComponent(run.id)}`, text: run.id }) : run.id),
    el("td", { class: "status", text: run.status }),
    el("td", { text: run.corpus }),
    el("td", { text: run.arms.join(", ") }),
    el("td", { text: run.families.join(", ") }),
    el("td", { class: "progress", text: progressText(run) || (run.error ? run.error : "") }),
    el("td", { text: run.planned_answers ? `${run.answers}/${run.planned_answers}` : String(run.answers) }),
    el("td", { class: "small", text: run.created_at }),
    el("td", {}, fileButtons(run.id, run.reports)),
  ));
  show(
    el("h1", { text: "Runs" }),
    el("p", { class: "small", text: "Stored runs, newest first. Pick two to compare; running jobs update every 3 s." }),
    compare,
    el("table", { id: "runs" },
      el("tr", {}, ["", "run", "status", "corpus", "arms", "families", "progress", "answers", "created", "report files"]
        .map((h) => el("th", { text: h }))),
      rows),
    figuresSoFar(runs),
  );
  if (runs.some((r) => ["queued", "training", "evaluating"].includes(r.status))) {
    runsPolling.timer = setTimeout(() => { if (location.pathname.replace(/\/$/, "") === "/ui") runsPage(); }, 3000);
  }
}

// ---- a running run's figures so far (its job's progress.figures): each family as soon as it is answered,
// provisional (the arms that need no training, no verdict) until every arm has answered it, then final with its
// verdict, the one the report will print. Redrawn with the runs list, so it follows the list's polling.
function figuresSoFar(runs) {
  const active = runs.filter((r) => ["queued", "training", "evaluating"].includes(r.status)
                                    && r.job && r.job.progress && r.job.progress.figures);
  if (!active.length) return null;
  const interval = (c) => (c && c.value !== null && c.value !== undefined
    ? `${num(c.value)} [${num(c.ci_low)}, ${num(c.ci_high)}]` : "n/a");
  const row = (f) => el("tr", { class: `figure ${f.status}`, dataset: { family: f.family } },
    el("td", { text: f.family }),
    el("td", { class: "state", text: f.status === "final" ? `final, ${f.rows} rows` : `provisional, ${f.rows} rows so far` }),
    el("td", { text: f.metric }),
    el("td", {}, f.arms.map((a) => el("span", { class: "cell", dataset: { arm: a.arm }, text: `${a.label} ${interval(a)}` }))),
    el("td", { text: interval(f.chance) }),
    el("td", { class: "verdict", text: f.verdict ? `${f.verdict.recommended} (best ${f.verdict.best})`
      : f.status === "final" ? "-" : `no verdict yet: ${f.waiting.join(", ")} still to answer` }));
  return el("section", { id: "figures-so-far" },
    el("h2", { text: "Figures so far" }),
    el("p", { class: "small", text: "A running run's families as soon as they are answered. Provisional figures read only the arms that need no training and name no winner; a family's verdict is final once every arm has answered it." }),
    active.map((run) => el("div", { class: "running", dataset: { run: run.id } },
      el("h3", { text: run.id }),
      el("table", {},
        el("tr", {}, ["family", "figures", "headline", "arms (95% CI)", "chance", "verdict"].map((h) => el("th", { text: h }))),
        Object.values(run.job.progress.figures).map(row)))));
}

// ---- a run: verdicts, charts, rows
const FILTERS = ["family", "arm", "disagree", "wrong", "all_wrong", "abstained", "q", "offset", "row"];

function filterState() {
  const params = new URLSearchParams(location.search);
  const state = {};
  for (const name of FILTERS) if (params.get(name)) state[name] = params.get(name);
  return state;
}

function setFilterState(state) {
  const params = new URLSearchParams();
  for (const name of FILTERS) if (state[name]) params.set(name, state[name]);
  const query = params.toString();
  history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
}

function markBadge(answer) {
  const parts = [el("span", { class: `mark ${answer.outcome}`, title: `${answer.label}: ${answer.outcome}`,
                              text: `${answer.label} ${answer.outcome === "correct" ? "✓" : answer.outcome === "wrong" ? "✗" : "–"}` })];
  if (answer.abstained) parts.push(el("span", { class: "mark abstained", text: "abstained" }));
  if (answer.review) {
    parts.push(el("span", { class: "mark reviewed " + (answer.review.correct ? "correct" : "wrong"),
                            title: `reviewed by ${answer.review.reviewer}`,
                            text: `review: ${answer.review.correct ? "right" : "wrong"}` }));
  }
  return parts;
}

function verdictTable(verdicts) {
  const columns = [["family", "family"], ["metric", "headline"], ["best", "best"], ["score", "score [95% CI]"],
                   ["chance", "chance"], ["mdd", "MDD"], ["worse", "worse"], ["non_inferior", "non-inferior"],
                   ["undecided", "undecided"], ["relative", "best relative to the others"],
                   ["above_chance", "above chance"], ["recommended", "recommended"], ["rule", "folk rule"]];
  return el("table", { id: "verdicts" },
    el("tr", {}, columns.map(([, h]) => el("th", { text: h }))),
    verdicts.map((v) => el("tr", {}, columns.map(([k]) => el("td", { text: v[k] === undefined ? "-" : String(v[k]) })))));
}

async function runPage(runId) {
  document.title = `ragft: ${runId}`;
  let run;
  try {
    run = (await api(`/v1/results/${encodeURIComponent(runId)}`)).body;
  } catch (error) {
    return show(el("h1", { text: runId }), failure(error));
  }
  const state = filterState();
  const rowsBox = el("div", { id: "rows" });
  const detail = el("div", { id: "row-detail" });
  const reviewBox = el("div", { id: "review" });
  const charts = Object.entries(run.charts)
    .filter(([, src]) => typeof src === "string" && src.startsWith("data:image/png;base64,"))
    .map(([name, src]) => el("img", { class: "chart", alt: `${name} chart`, src }));

  const select = (name, options, label) => el("label", {}, label + " ",
    el("select", { name, onchange: (e) => update({ [name]: e.target.value, offset: "" }) },
      el("option", { value: "", text: "any" }),
      options.map(([value, text]) => el("option", { value, text, selected: state[name] === value }))));
  const check = (name, label) => el("label", {},
    el("input", { type: "checkbox", name, checked: state[name] === "1",
                  onchange: (e) => update({ [name]: e.target.checked ? "1" : "", offset: "" }) }), " " + label);
  const arms = run.arms.map((a) => [a.name, a.label]);
  let typing;
  const filters = el("form", { class: "filters", id: "filters", onsubmit: (e) => e.preventDefault() },
    select("family", run.families.map((f) => [f, f]), "family"),
    select("arm", arms, "arm"),
    check("disagree", "arms disagree"),
    select("wrong", arms, "wrong:"),
    check("all_wrong", "all wrong"),
    check("abstained", "abstained"),
    el("input", { type: "search", name: "q", placeholder: "search text", value: state.q || "",
                  oninput: (e) => { clearTimeout(typing); typing = setTimeout(() => update({ q: e.target.value, offset: "" }), 250); } }));

  function update(change) {
    Object.assign(state, change);
    for (const k of Object.keys(state)) if (!state[k]) delete state[k];
    setFilterState(state);
    loadRows();
  }

  async function loadRows() {
    const params = new URLSearchParams();
    for (const name of ["family", "arm", "wrong", "q"]) if (state[name]) params.set(name, state[name]);
    for (const name of ["disagree", "all_wrong", "abstained"]) if (state[name] === "1") params.set(name, "true");
    const offset = Number(state.offset || 0);
    params.set("limit", PAGE);
    params.set("offset", offset);
    let page;
    try {
      page = await api(`/v1/results/${encodeURIComponent(runId)}/rows?${params}`);
    } catch (error) {
      return fill(rowsBox, failure(error));
    }
    const body = page.body.map((row) => el("tr", { class: "row" + (state.row === row.id ? " open" : ""),
        dataset: { row: row.id }, onclick: () => { update({ row: row.id }); openRow(row.id); } },
      el("td", { text: row.id }),
      el("td", { text: row.family + (row.kind ? ` (${row.kind})` : "") }),
      el("td", { text: row.input.length > 140 ? row.input.slice(0, 140) + "…" : row.input }),
      el("td", {}, row.answers.map(markBadge))));
    fill(rowsBox, 
      el("div", { class: "pager" },
        el("span", { id: "row-count", text: `${page.total} rows` + (page.total ? `, ${offset + 1}-${offset + page.body.length}` : "") }),
        el("button", { type: "button", text: "previous", disabled: offset === 0,
                       onclick: () => update({ offset: String(Math.max(0, offset - PAGE)) }) }),
        el("button", { type: "button", text: "next", disabled: offset + PAGE >= page.total,
                       onclick: () => update({ offset: String(offset + PAGE) }) })),
      el("table", { id: "row-table" }, el("tr", {}, ["row", "family", "input", "marks"].map((h) => el("th", { text: h }))), body));
  }

  async function openRow(rowId) {
    for (const tr of rowsBox.querySelectorAll("tr.row")) tr.classList.toggle("open", tr.dataset.row === rowId);
    let row;
    try {
      row = (await api(`/v1/results/${encodeURIComponent(runId)}/rows/${encodeURIComponent(rowId)}`)).body;
    } catch (error) {
      return fill(detail, failure(error));
    }
    fill(detail, 
      el("h2", { text: `Row ${row.id}` }),
      el("p", { class: "small", text: `family ${row.family}${row.kind ? ` (${row.kind})` : ""}; scored in ${row.families.join(", ")}` }),
      el("h3", { text: "Input" }), el("pre", { class: "input", text: row.input }),
      el("h3", { text: "Expected" }), el("pre", { class: "expected", text: row.expected }),
      row.accepted.length ? el("p", { class: "small", text: "accepted answers: " + row.accepted.join(" | ") }) : null,
      el("div", { class: "answers" }, row.answers.map((a) => answerCard(row, a))));
    detail.scrollIntoView({ block: "nearest" });
  }

  function answerCard(row, a) {
    const scores = Object.entries(a.scores || {});
    const reviewer = () => {
      const name = (sessionStorage.getItem(REVIEWER) || prompt("Your name, as the reviewed report should show it:") || "").trim();
      if (name) sessionStorage.setItem(REVIEWER, name);
      return name;
    };
    const mark = async (correct) => {
      const name = correct === null ? "" : reviewer();
      if (correct !== null && !name) return;
      const path = `/v1/results/${encodeURIComponent(runId)}/reviews/${encodeURIComponent(a.arm)}/${encodeURIComponent(row.id)}`;
      try {
        if (correct === null) await api(path, { method: "DELETE" });
        else await api(path, { method: "PUT", json: { correct, reviewer: name } });
      } catch (error) {
        return alert(error.message);
      }
      openRow(row.id);
      loadRows();
      loadReview();
    };
    return el("div", { class: "answer", dataset: { arm: a.arm } },
      el("h3", { text: a.label }), el("div", {}, markBadge(a)),
      el("pre", { class: "answer-text", text: a.text }),
      el("p", { class: "small", text: `headline ${num(a.headline)} · cost ${num(a.cost_ms, 0)} ms` }),
      scores.length ? el("table", { class: "scores" }, scores.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: num(v) })))) : null,
      el("div", { class: "small" }, "review: ",
        el("button", { type: "button", class: "review-right", text: "right", onclick: () => mark(true) }), " ",
        el("button", { type: "button", class: "review-wrong", text: "wrong", onclick: () => mark(false) }), " ",
        a.review ? el("button", { type: "button", class: "review-clear", text: "clear", onclick: () => mark(null) }) : null),
      a.retrieve ? el("h3", { text: `Passages (${a.passages.length})` }) : null,
      (a.passages || []).map((p) => el("div", { class: "passage" },
        el("span", { class: "small", text: `${p.doc_id}${p.page ? ", " + p.page : ""} · ${p.chunk_id}: ` }),
        p.pieces.map(([text, match]) => (match ? el("mark", { text }) : text)))));
  }

  async function loadReview() {
    let summary;
    try {
      summary = (await api(`/v1/results/${encodeURIComponent(runId)}/reviews`)).body.summary;
    } catch (error) {
      return fill(reviewBox, failure(error));
    }
    const status = el("span", { class: "small" });
    fill(reviewBox, 
      el("p", { id: "review-line", text: summary ? summary.line : "No answers reviewed yet: mark one right or wrong in its row." }),
      summary ? el("button", { type: "button", id: "render-reviewed", text: "Render the reviewed report",
        onclick: async () => {
          status.textContent = " rendering…";
          try {
            const out = (await api(`/v1/results/${encodeURIComponent(runId)}/reviewed-report`, { method: "POST" })).body;
            fill(status, " " + out.review.line + " ",
              fileButtons(runId, Object.fromEntries(Object.keys(out.files).map((n) => [`reviewed/${n}`, true])), "reviewed/"));
          } catch (error) {
            status.textContent = " " + error.message;
          }
        } }) : null,
      status);
  }

  const meta = run.run;
  show(
    el("h1", { text: `Run ${meta.id}` }),
    el("p", { class: "small", text: `corpus ${meta.corpus} · status ${meta.status} · arms ${meta.arms.join(", ")} · ${run.rows} rows · ${meta.answers} answers · created ${meta.created_at}` }),
    el("div", {}, fileButtons(meta.id, meta.reports)),
    el("h2", { text: "Verdict" }),
    run.verdicts.length ? verdictTable(run.verdicts) : el("p", { class: "small", text: "No published report yet: the verdicts show once the run is done." }),
    run.how_to_read ? el("p", { class: "small", text: run.how_to_read }) : null,
    charts.length ? el("div", { class: "charts" }, charts) : null,
    el("h2", { text: "Reviews" }), reviewBox,
    el("h2", { text: "Rows" }), filters, rowsBox, detail);
  loadReview();
  await loadRows();
  if (state.row) openRow(state.row);
}

// ---- two runs compared
async function comparePage(a, b) {
  document.title = `ragft: ${a} vs ${b}`;
  let out;
  try {
    out = (await api(`/v1/compare/${encodeURIComponent(a)}/${encodeURIComponent(b)}`)).body;
  } catch (error) {
    return show(el("h1", { text: "Compare" }), failure(error));
  }
  const headline = el("table", { id: "headline-changes" },
    el("tr", {}, ["family", "arm", "metric", "A", "B", "B - A", "95% CI", "Holm p", "n", "test", ""].map((h) => el("th", { text: h }))),
    out.headline_changes.map((c) => {
      const better = c.significant && !c.regression;
      return el("tr", { class: c.regression ? "regression" : better ? "improved" : "" },
        el("td", { text: c.family }), el("td", { text: c.label }), el("td", { text: c.metric }),
        el("td", { text: num(c.before) }), el("td", { text: num(c.after) }), el("td", { text: signed(c.difference) }),
        el("td", { text: c.ci_low === null ? "-" : `[${signed(c.ci_low)}, ${signed(c.ci_high)}]` }),
        el("td", { text: c.p_holm === null ? "-" : Number(c.p_holm).toPrecision(3) }),
        el("td", { text: String(c.n) }), el("td", { class: "small", text: c.test }),
        el("td", { text: c.regression ? "REGRESSION" : better ? "improved" : "" }));
    }));
  const perArm = Object.entries(out.changed_rows).map(([arm, info]) => el("section", { class: "changed", dataset: { arm } },
    el("h3", { text: `${info.label}: ${info.fixed} fixed, ${info.broke} broke` }),
    el("table", {},
      el("tr", {}, ["row", "change", "input", "expected", `answer in ${a}`, `answer in ${b}`].map((h) => el("th", { text: h }))),
      info.rows.map((r) => el("tr", { class: "changed-row", dataset: { row: r.id } },
        el("td", {}, el("a", { href: `/ui/runs/${encodeURIComponent(b)}?row=${encodeURIComponent(r.id)}`, text: r.id })),
        el("td", { class: r.change === "broke" ? "regression" : "improved", text: r.change }),
        el("td", { text: r.input }), el("td", {}, el("pre", { text: r.expected })),
        el("td", {}, el("pre", { text: r.before })), el("td", {}, el("pre", { text: r.after })))))));
  show(
    el("h1", { text: "Compare runs" }),
    el("p", {}, "A: ", el("a", { href: `/ui/runs/${encodeURIComponent(a)}`, text: a }), " → B: ",
       el("a", { href: `/ui/runs/${encodeURIComponent(b)}`, text: b })),
    el("p", { id: "regressions", class: out.regressions ? "regression" : "small",
              text: out.regressions ? `${out.regressions} significant drop(s) (Holm-adjusted paired test): ragft compare ${a} ${b} --fail-on-regression exits 1`
                                    : "No significant drop (Holm-adjusted paired test on the rows both runs scored)." }),
    el("h2", { text: "Headline change per family and arm" }), headline,
    el("h2", { text: "Rows that changed outcome" }),
    perArm.length ? perArm : el("p", { class: "small", text: "No row changed outcome." }));
}

// ---- ask the arms
async function askPage() {
  document.title = "ragft: ask";
  let listed;
  try {
    listed = (await api("/v1/arms")).body;  // every arm, whether it can answer now, and which a query runs by default
  } catch (error) {
    return show(el("h1", { text: "Ask" }), failure(error));
  }
  const ready = listed.filter((a) => a.ready);
  const arms = ready.length ? ready : listed.filter((a) => a.asked_by_default);
  const results = el("div", { id: "ask-results", class: "answers" });
  const question = el("textarea", { id: "question", rows: 3, cols: 80, maxLength: 2000, placeholder: "A question for the arms" });
  const topK = el("input", { type: "number", id: "top-k", min: 1, max: 20, placeholder: "default" });
  const status = el("p", { class: "small", id: "ask-status" });
  const form = el("form", { id: "ask-form", onsubmit: async (event) => {
    event.preventDefault();
    const chosen = [...form.querySelectorAll("input.arm:checked")].map((i) => i.value);
    if (!question.value.trim() || !chosen.length) return (status.textContent = "Write a question and pick at least one arm.");
    status.textContent = "asking…";
    fill(results);
    const started = performance.now();
    let out;
    try {
      const body = { question: question.value, arms: chosen };
      if (topK.value) body.top_k = Number(topK.value);
      out = (await api("/v1/query", { method: "POST", json: body })).body;
    } catch (error) {
      return fill(status, failure(error));
    }
    status.textContent = `answered in ${((performance.now() - started) / 1000).toFixed(1)} s (round trip)`;
    fill(results, ...out.answers.map((a) => el("div", { class: "answer", dataset: { arm: a.arm } },
      el("h3", { text: a.arm }),
      el("pre", { class: "answer-text", text: a.answer }),
      el("p", { class: "small latency", text: `generation ${num(a.latency_ms, 0)} ms (batch of ${a.batch_size}) · retrieval ${num(a.retrieval_ms, 0)} ms · ${a.prompt_tokens} prompt / ${a.generated_tokens} generated tokens` }),
      a.passages.map((p) => el("div", { class: "passage" },
        el("span", { class: "small", text: `${p.doc_id}${p.page ? ", " + p.page : ""} · score ${num(p.score)}: ` }), p.text)))));
  } },
    el("p", {}, question),
    el("p", {}, arms.map((a) => el("label", { title: a.summary }, el("input", { type: "checkbox", class: "arm", value: a.name, checked: a.asked_by_default }), ` ${a.name} `))),
    el("p", {}, el("label", {}, "passages (top_k) ", topK), " ", el("button", { type: "submit", id: "ask-button", text: "Ask" })));
  show(el("h1", { text: "Ask the arms" }),
       el("p", { class: "small", text: "One question through the chosen arms side by side (POST /v1/query), with the passages the retrieving arms read." }),
       form, status, results);
}

// ---- generated rows to review: keyboard first (j/k move, a accept, e edit, Enter save, Esc cancel, r reject)
const EDITABLE = { knowledge: ["question", "paraphrase", "answer"], abstention: ["question"], behaviour: ["input", "label", "expected"] };

async function reviewPage() {
  document.title = "ragft: review generated rows";
  let corpus;
  try {
    corpus = (await api("/v1/corpora")).body.find((c) => c.served);
  } catch (error) {
    return show(el("h1", { text: "Review generated rows" }), failure(error));
  }
  const base = `/v1/corpora/${encodeURIComponent(corpus.name)}/generated`;
  const params = new URLSearchParams(location.search);
  const state = { family: params.get("family") || "", items: [], current: 0, editing: false };
  const tabs = el("div", { id: "families", class: "filters" });
  const list = el("div", { id: "items" });
  const status = el("p", { id: "review-status", class: "small" });
  const name = el("input", { id: "reviewer", placeholder: "your name", size: 24, value: sessionStorage.getItem(REVIEWER) || "",
    onchange: (e) => sessionStorage.setItem(REVIEWER, e.target.value.trim()) });

  async function load() {
    const query = new URLSearchParams({ status: "pending" });
    if (state.family) query.set("family", state.family);
    let out;
    try {
      out = (await api(`${base}?${query}`)).body;
    } catch (error) {
      return fill(list, failure(error));
    }
    const families = Object.keys(out.counts);
    if (!state.family && families.length) {
      state.family = families.find((f) => out.counts[f].pending) || families[0];
      return load();
    }
    fill(tabs, families.map((f) => el("button", { type: "button", class: "family" + (f === state.family ? " open" : ""),
      dataset: { family: f }, text: `${f}: ${out.counts[f].pending} pending`,
      onclick: () => { state.family = f; history.replaceState(null, "", `/ui/review?family=${f}`); state.current = 0; load(); } })),
      el("span", { class: "small", text: families.map((f) => `${f} ${out.counts[f].accepted} accepted, ${out.counts[f].edited} edited, ${out.counts[f].rejected} rejected`).join(" · ") }));
    state.items = out.items;
    state.current = Math.min(state.current, Math.max(0, state.items.length - 1));
    render();
  }

  function field(item, key) {
    const value = item[key];
    if (value === null || value === undefined) return null;
    const text = typeof value === "object" ? JSON.stringify(value) : String(value);
    return el("label", { class: "field" }, el("span", { class: "small", text: key }),
      el("textarea", { name: key, rows: key === "answer" || key === "label" ? 1 : 2, readOnly: true, text }));
  }

  // The span beside the item, its answer marked; a near miss names the real entity it was made from.
  function sourceOf(item) {
    if (item.kind === "near_miss") {
      return el("p", { class: "small", text: `near miss of "${item.span}", which the documents name; no document names the question's entity` });
    }
    const span = item.span || "";
    const at = item.answer ? span.toLowerCase().indexOf(item.answer.toLowerCase()) : -1;
    const quote = at < 0 ? span : [span.slice(0, at), el("mark", { text: span.slice(at, at + item.answer.length) }), span.slice(at + item.answer.length)];
    return [el("p", { class: "small", text: item.source_doc ? `from ${item.source_doc}` : "no document (made from the corpus's examples)" }),
            span ? el("blockquote", { class: "span" }, quote) : null];
  }

  function render() {
    if (!state.items.length) return fill(list, el("p", { class: "small", id: "no-items", text: "Nothing pending here." }));
    fill(list, state.items.map((item, i) => el("div", { class: "item" + (i === state.current ? " current" : ""),
        dataset: { item: item.item }, onclick: () => { if (!state.editing) { state.current = i; render(); } } },
      el("div", { class: "fields" },
        el("p", { class: "small", text: `${item.family}${item.kind ? " (" + item.kind + ")" : ""} · ${item.splits.join(" + ")} · ${item.item}` }),
        (EDITABLE[item.family] || []).map((key) => field(item, key)),
        item.labels ? el("p", { class: "small", text: "labels: " + item.labels.join(", ") }) : null,
        el("div", { class: "actions" },
          el("button", { type: "button", class: "accept", text: "accept (a)", onclick: () => act(i, "accept") }),
          el("button", { type: "button", class: "edit", text: "edit (e)", onclick: () => startEdit(i) }),
          el("button", { type: "button", class: "save", text: "save edit (Enter)", hidden: true, onclick: () => act(i, "edit") }),
          el("button", { type: "button", class: "reject", text: "reject (r)", onclick: () => act(i, "reject") }))),
      el("div", { class: "source" }, sourceOf(item)))));
    const current = list.querySelector(".item.current");
    if (current) current.scrollIntoView({ block: "nearest" });
  }

  function startEdit(i) {
    state.current = i;
    render();
    const card = list.querySelector(".item.current");
    state.editing = true;
    for (const box of card.querySelectorAll("textarea")) box.readOnly = false;
    card.querySelector(".save").hidden = false;
    const first = card.querySelector("textarea");
    if (first) first.focus();
  }

  async function act(i, decision) {
    const item = state.items[i];
    const reviewer = name.value.trim() || (prompt("Your name, stored with each decision:") || "").trim();
    if (!reviewer) return (status.textContent = "Enter your name first: it is stored with each decision.");
    name.value = reviewer;
    sessionStorage.setItem(REVIEWER, reviewer);
    const edits = {};
    try {
      if (decision === "edit") {
        for (const box of list.querySelectorAll(".item.current textarea")) {
          edits[box.name] = box.name === "expected" ? JSON.parse(box.value) : box.value.trim();
        }
      }
      const done = (await api(`${base}/${encodeURIComponent(item.item)}`, { method: "PUT", json: { decision, reviewer, edits } })).body;
      status.textContent = `${item.item}: ${done.status} by ${done.reviewer}`;
    } catch (error) {
      status.textContent = error.message;
      return;
    }
    state.editing = false;
    await load();
  }

  document.onkeydown = (event) => {
    if (!location.pathname.startsWith("/ui/review") || event.ctrlKey || event.metaKey || event.altKey) return;
    if (!state.editing && event.target.matches("input, select, textarea:not([readonly])")) return; // typing a name or key
    if (state.editing) {
      if (event.key === "Escape") { state.editing = false; render(); }
      else if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); act(state.current, "edit"); }
      return;
    }
    const moves = { j: 1, ArrowDown: 1, k: -1, ArrowUp: -1 };
    if (event.key in moves) {
      event.preventDefault();
      state.current = Math.max(0, Math.min(state.items.length - 1, state.current + moves[event.key]));
      render();
    } else if (state.items.length && event.key === "a") act(state.current, "accept");
    else if (state.items.length && event.key === "r") act(state.current, "reject");
    else if (state.items.length && event.key === "e") { event.preventDefault(); startEdit(state.current); }
  };

  show(el("h1", { text: `Review generated rows: ${corpus.name}` }),
    el("p", { class: "small", text: "Rows ragft corpus generate made, each beside the span of the document it rests on. A run counts a row once accepted or edited. Keys: j/k or arrows move, a accept, e edit (Enter saves, Esc cancels), r reject." }),
    el("p", {}, el("label", {}, "reviewer ", name)), tabs, status, list);
  await load();
}

// ---- routing: the path names the page
function route() {
  const parts = location.pathname.replace(/\/+$/, "").split("/").slice(2).map(decodeURIComponent);
  if (parts[0] === "runs" && parts[1]) return runPage(parts[1]);
  if (parts[0] === "compare" && parts[1] && parts[2]) return comparePage(parts[1], parts[2]);
  if (parts[0] === "ask") return askPage();
  if (parts[0] === "review") return reviewPage();
  return runsPage();
}

setUpKeyForm();
route();
