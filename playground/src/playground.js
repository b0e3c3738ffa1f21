// The playground page: a CodeMirror 6 editor, language and version pickers, test cases with
// per-case verdicts, and a terminal-like pane for interactive runs. It only uses the public
// API (/api/v1), so it shows what any client can do. Built by `npm run build` into
// app/static/playground.js.
import { EditorView, basicSetup } from "codemirror";
import { Compartment, EditorState } from "@codemirror/state";
import { StreamLanguage } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { javascript } from "@codemirror/lang-javascript";
import { cpp } from "@codemirror/lang-cpp";
import { java } from "@codemirror/lang-java";
import { rust } from "@codemirror/lang-rust";
import { go } from "@codemirror/legacy-modes/mode/go";
import { ruby } from "@codemirror/legacy-modes/mode/ruby";
import { shell } from "@codemirror/legacy-modes/mode/shell";

const MODES = {
  python: () => python(),
  javascript: () => javascript(),
  typescript: () => javascript({ typescript: true }),
  c: () => cpp(),
  cpp: () => cpp(),
  java: () => java(),
  rust: () => rust(),
  go: () => StreamLanguage.define(go),
  ruby: () => StreamLanguage.define(ruby),
  bash: () => StreamLanguage.define(shell),
};

const SAMPLES = {
  python: 'name = input("name? ")\nprint(f"hello, {name}!")\n',
  javascript: 'const lines = require("fs").readFileSync(0, "utf8").split("\\n");\nconsole.log(`hello, ${lines[0]}!`);\n',
  c: '#include <stdio.h>\n\nint main(void) {\n    char name[64];\n    if (scanf("%63s", name) == 1) printf("hello, %s!\\n", name);\n    return 0;\n}\n',
};

const $ = (id) => document.getElementById(id);
const language = new Compartment();
let current = null; // the EventSource of the running job
let jobId = null;

const view = new EditorView({
  parent: $("editor"),
  state: EditorState.create({
    doc: SAMPLES.python,
    extensions: [basicSetup, language.of(MODES.python()), EditorView.lineWrapping],
  }),
});
window.runboxEditor = view; // for tests and for pasting whole programs

function setText(text) {
  view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
}

async function loadLanguages() {
  const response = await fetch("/api/v1/languages");
  const languages = await response.json();
  const picker = $("language");
  for (const lang of languages) {
    const option = document.createElement("option");
    option.value = lang.name;
    option.textContent = lang.name;
    option.dataset.versions = JSON.stringify(lang.versions && lang.versions.length ? lang.versions : [lang.version]);
    option.dataset.maxTimeout = String((lang.max_limits && lang.max_limits.timeout_s) || 30);
    picker.appendChild(option);
  }
  picker.value = languages.some((l) => l.name === "python") ? "python" : languages[0].name;
  pickLanguage();
}

function pickLanguage() {
  const picker = $("language");
  const option = picker.selectedOptions[0];
  const versions = JSON.parse(option.dataset.versions || "[]");
  const versionPicker = $("version");
  versionPicker.textContent = "";
  for (const v of versions) {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = v;
    versionPicker.appendChild(o);
  }
  versionPicker.disabled = versions.length < 2;
  const mode = MODES[picker.value];
  view.dispatch({ effects: language.reconfigure(mode ? mode() : []) });
  if (SAMPLES[picker.value] && Object.values(SAMPLES).includes(view.state.doc.toString())) {
    setText(SAMPLES[picker.value]);
  }
}

// --- test cases ---------------------------------------------------------------------------------
function addCase(stdin = "", expected = "") {
  const row = document.createElement("div");
  row.className = "case";
  row.innerHTML =
    '<span class="index"></span>' +
    '<textarea class="case-stdin" placeholder="stdin" spellcheck="false"></textarea>' +
    '<textarea class="case-expected" placeholder="expected stdout" spellcheck="false"></textarea>' +
    '<span class="verdict"></span><button class="remove" title="remove this case">✕</button>';
  row.querySelector(".case-stdin").value = stdin;
  row.querySelector(".case-expected").value = expected;
  row.querySelector(".remove").onclick = () => { row.remove(); renumber(); };
  $("cases").appendChild(row);
  renumber();
  return row;
}

function renumber() {
  document.querySelectorAll("#cases .case").forEach((row, i) => {
    row.querySelector(".index").textContent = `#${i + 1}`;
  });
  $("interactive").disabled = document.querySelectorAll("#cases .case").length > 0;
}

function caseRows() {
  return [...document.querySelectorAll("#cases .case")];
}

function showVerdict(index, verdict, detail) {
  const row = caseRows()[index];
  if (!row) return;
  const badge = row.querySelector(".verdict");
  badge.textContent = verdict.replace("_", " ");
  badge.className = `verdict ${verdict}`;
  if (detail) badge.title = detail;
}

// --- output and terminal -------------------------------------------------------------------------
function append(text, cls) {
  const span = document.createElement("span");
  if (cls) span.className = cls;
  span.textContent = text;
  $("output").appendChild(span);
  $("output").scrollTop = $("output").scrollHeight;
}

function headers() {
  const h = { "Content-Type": "application/json", "X-Runbox-Playground": "1" };
  const key = $("key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function sendInput(data, eof) {
  if (!jobId) return;
  const response = await fetch(`/api/v1/jobs/${jobId}/stdin`, {
    method: "POST", headers: headers(), body: JSON.stringify({ data, eof }),
  });
  if (response.status !== 202) {
    const body = await response.json().catch(() => ({}));
    append(`\n[input refused: ${(body.error && body.error.message) || response.status}]\n`, "err");
  }
}

$("terminal-input").addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  const line = $("terminal-input").value + "\n";
  $("terminal-input").value = "";
  append(line, "echo");
  sendInput(line, false);
});
$("eof").onclick = () => sendInput("", true);

function setRunning(running) {
  $("terminal").hidden = !(running && $("interactive").checked);
  $("run").disabled = running;
  if (running && $("interactive").checked) $("terminal-input").focus();
}

async function run() {
  if (current) current.close();
  $("output").textContent = "";
  caseRows().forEach((row) => { row.querySelector(".verdict").textContent = ""; row.querySelector(".verdict").className = "verdict"; });
  $("status").textContent = "submitting";
  const body = { language: $("language").value, source: view.state.doc.toString() };
  const version = $("version").value;
  if (version) body.version = version;
  const tests = caseRows().map((row) => ({
    stdin: row.querySelector(".case-stdin").value,
    expected_stdout: row.querySelector(".case-expected").value,
  }));
  if (tests.length) body.tests = tests;
  else if ($("interactive").checked) {
    // Someone is typing: give the program the longest wall time the language allows.
    body.interactive = true;
    body.limits = { timeout_s: Number($("language").selectedOptions[0].dataset.maxTimeout) };
  }
  if (!tests.length && $("stdin").value) body.stdin = $("stdin").value;
  let response = await fetch("/api/v1/jobs", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  let answer = await response.json();
  if (response.status === 400 && answer.error && answer.error.code === "unknown_version" && body.version) {
    // A deployment that lists no versions takes the language's default.
    delete body.version;
    response = await fetch("/api/v1/jobs", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    answer = await response.json();
  }
  if (response.status !== 202) { $("status").textContent = answer.error.message; return; }
  jobId = answer.id;
  $("status").textContent = "queued";
  setRunning(true);
  current = new EventSource(answer.events_url);
  current.addEventListener("started", () => { $("status").textContent = "running"; });
  current.addEventListener("stdout", (e) => append(JSON.parse(e.data).data));
  current.addEventListener("stderr", (e) => append(JSON.parse(e.data).data, "err"));
  current.addEventListener("compile", (e) => append(JSON.parse(e.data).output, "meta"));
  current.addEventListener("test", (e) => {
    const t = JSON.parse(e.data);
    showVerdict(t.index, t.verdict, `${t.duration_ms} ms`);
  });
  current.addEventListener("result", (e) => {
    const state = JSON.parse(e.data);
    const r = state.result || {};
    let line = `${state.status} · exit ${r.exit_code ?? "-"} · ${r.duration_ms} ms · ${r.memory_peak_kb} KiB`;
    if (r.verdict) line = `${r.verdict.replace("_", " ")} · ${line}`;
    $("status").textContent = line;
    for (const t of r.tests || []) {
      showVerdict(t.index, t.verdict, `${t.duration_ms} ms\nstdout:\n${t.stdout}${t.stderr ? "\nstderr:\n" + t.stderr : ""}`);
    }
    if (r.tests && r.tests.length) {
      for (const t of r.tests) if (t.verdict !== "accepted") append(`#${t.index + 1} ${t.verdict}: ${t.stdout}${t.stderr}`, "meta");
    }
    if (state.status === "failed" && r.error) append("\n" + r.error, "err");
    current.close();
    current = null;
    jobId = null;
    setRunning(false);
  });
}

$("run").onclick = run;
$("add-case").onclick = () => addCase();
$("language").onchange = pickLanguage;
$("interactive").onchange = () => { $("stdin-label").textContent = $("interactive").checked ? "initial stdin" : "stdin"; };
loadLanguages();
