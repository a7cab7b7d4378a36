// The page of `make serve`: a dropped file goes base64-encoded to /invocations (the served
// model decodes and preprocesses it); the answer is written with textContent only, never
// parsed as HTML (labels and messages come from the model and the user's file).
"use strict";

const byId = (id) => document.getElementById(id);
const config = byId("config").dataset;
const NOT_AVAILABLE = config.notAvailable;

function setText(id, text) {
  byId(id).textContent = text;
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function probabilities(row) {
  // The response's p_<class> columns, in the model's class order.
  return Object.keys(row)
    .filter((key) => key.startsWith("p_"))
    .map((key) => [key.slice(2), row[key]]);
}

function showProbabilities(row) {
  const body = byId("probabilities").tBodies[0];
  body.replaceChildren();
  for (const [name, p] of probabilities(row)) {
    const tr = document.createElement("tr");
    tr.dataset.class = name;
    const label = document.createElement("th");
    label.scope = "row";
    label.textContent = name;
    const value = document.createElement("td");
    value.className = "value";
    value.textContent = p === null ? NOT_AVAILABLE : Number(p).toFixed(4);
    const bar = document.createElement("td");
    const meter = document.createElement("progress");
    meter.max = 1;
    meter.value = p === null ? 0 : Number(p);
    bar.append(meter);
    tr.append(label, value, bar);
    body.append(tr);
  }
}

function predictionSet(row) {
  if (!("prediction_set" in row) || row.prediction_set === null) return NOT_AVAILABLE;
  const set = Array.isArray(row.prediction_set) ? row.prediction_set : [row.prediction_set];
  if (set.length === 0) return "{ } (empty: no class is likely enough)";
  return `{${set.join(", ")}}` + (set.length > 1 ? " (the model cannot tell these apart)" : "");
}

function outOfDistribution(row) {
  if (!("in_distribution" in row) || row.in_distribution === null) return NOT_AVAILABLE;
  const score = "ood_score" in row && row.ood_score !== null
    ? ` (score ${Number(row.ood_score).toFixed(3)})` : "";
  return row.in_distribution
    ? `no: like the training images${score}`
    : `yes: unlike the training images, do not trust the answer${score}`;
}

function show(row) {
  byId("result").hidden = false;
  const error = byId("error");
  error.hidden = !row.error;
  error.textContent = row.error || "";
  byId("answer").hidden = Boolean(row.error) && row.label === null;
  showProbabilities(row);
  setText("label", row.label ?? NOT_AVAILABLE);
  setText("decision", row.thresholded_label ?? NOT_AVAILABLE);
  setText(
    "decision-rule",
    `at the operating threshold: ${config.positive} when p(${config.positive}) ≥ ` +
      `${Number(row.threshold).toFixed(4)}, else the most probable other class`,
  );
  setText("prediction-set", predictionSet(row));
  setText("ood", outOfDistribution(row));
  const image = byId("gradcam");
  const figure = byId("gradcam-figure");
  figure.hidden = !row.gradcam_png;
  if (row.gradcam_png) image.src = `data:image/png;base64,${row.gradcam_png}`;
  else image.removeAttribute("src");
}

function fail(message) {
  byId("result").hidden = false;
  byId("answer").hidden = true;
  const error = byId("error");
  error.hidden = false;
  error.textContent = message;
}

async function score(file) {
  setText("file-name", file.name);
  setText("status", `Scoring ${file.name}…`);
  document.body.classList.add("busy");
  try {
    const image = await readBase64(file);
    const request = {
      dataframe_split: { columns: ["image", "id", "explain"], data: [[image, file.name, true]] },
    };
    const response = await fetch("invocations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      fail(`The server refused the request (HTTP ${response.status}): ${answer.message || ""}`);
    } else {
      show(answer.predictions[0]);
    }
    setText("status", `Scored ${file.name}.`);
  } catch (error) {
    fail(`Could not reach the server: ${error}`);
    setText("status", "");
  } finally {
    document.body.classList.remove("busy");
    document.body.dataset.scored = String(Number(document.body.dataset.scored || 0) + 1);
  }
}

const input = byId("file");
const zone = byId("drop-zone");
input.addEventListener("change", () => {
  if (input.files.length) score(input.files[0]);
});
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  if (event.dataTransfer.files.length) score(event.dataTransfer.files[0]);
});
