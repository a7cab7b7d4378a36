// The page of `make serve`: a dropped file goes base64-encoded to /invocations (the served
// model decodes and preprocesses it); the answer is written with textContent only, never
// parsed as HTML (labels and messages come from the model and the user's file). Several files
// go in one request as the views of one exam (one `group` and `study`): the model answers each
// of its levels keyed by those columns, shown above the images' answers. A model read tile by
// tile answers `top_tiles` (boxes in the image's pixels): they are outlined over its thumbnail.
"use strict";

const byId = (id) => document.getElementById(id);
const config = byId("config").dataset;
const NOT_AVAILABLE = config.notAvailable;
// The key the files of one exam share: levels keyed by `group` (patient) and by `group` and
// `study` (exam) answer for them; a level keyed by a column the page cannot fill does not.
const EXAM_KEY = "exam";
const LEVEL_SUFFIX = "_n_images";
const LEVEL_THRESHOLDS = JSON.parse(config.levelThresholds || "null") || {};

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
  showTiles(row);
}

function percent(value, total) {
  return `${(100 * Number(value)) / Number(total)}%`;
}

function showTiles(row) {
  // The top tiles outlined over the whole image's thumbnail, numbered by rank; positions in
  // percent of the image, so they fit the thumbnail at any size.
  const frame = byId("gradcam-frame");
  for (const old of frame.querySelectorAll(".tile-box")) old.remove();
  const tiles = Array.isArray(row.top_tiles) ? row.top_tiles : [];
  const shown = Boolean(row.gradcam_png) && tiles.length > 0 && row.image_width > 0;
  byId("tiles-caption").hidden = !shown;
  byId("whole-caption").hidden = shown;
  if (!shown) return;
  tiles.forEach((tile, i) => {
    const box = document.createElement("div");
    box.className = "tile-box";
    box.dataset.rank = String(i + 1);
    box.style.top = percent(tile.top, row.image_height);
    box.style.left = percent(tile.left, row.image_width);
    box.style.height = percent(tile.height, row.image_height);
    box.style.width = percent(tile.width, row.image_width);
    box.title = `tile ${i + 1}: p(${config.positive}) = ${Number(tile.score).toFixed(4)}`;
    box.textContent = String(i + 1);
    frame.append(box);
  });
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function probabilityText(p) {
  return p === null || p === undefined ? NOT_AVAILABLE : Number(p).toFixed(4);
}

function levelNames(row) {
  // The levels the answer carries (`<level>_n_images`), in the answer's order.
  return Object.keys(row)
    .filter((key) => key.endsWith(LEVEL_SUFFIX))
    .map((key) => key.slice(0, -LEVEL_SUFFIX.length));
}

function showLevels(rows) {
  const body = byId("levels").tBodies[0];
  body.replaceChildren();
  const names = levelNames(rows[0]);
  for (const name of names) {
    // Every scored row of the exam carries its level's answer; failed rows carry nulls.
    const row = rows.find((r) => r[`${name}_label`] !== null) || rows[0];
    const tr = document.createElement("tr");
    tr.dataset.level = name;
    const label = document.createElement("th");
    label.scope = "row";
    label.textContent = name;
    tr.append(
      label,
      cell(row[`${name}_label`] ?? NOT_AVAILABLE),
      cell(probabilityText(row[`${name}_p_${config.positive}`])),
      cell(String(row[`${name}${LEVEL_SUFFIX}`] ?? 0)),
      cell(name in LEVEL_THRESHOLDS ? Number(LEVEL_THRESHOLDS[name]).toFixed(4) : NOT_AVAILABLE),
    );
    body.append(tr);
  }
  byId("levels").hidden = names.length === 0;
  byId("no-levels").hidden = names.length > 0;
}

function showImages(rows, files) {
  const body = byId("images").tBodies[0];
  body.replaceChildren();
  rows.forEach((row, i) => {
    const tr = document.createElement("tr");
    const choose = document.createElement("button");
    choose.type = "button";
    choose.textContent = "details";
    choose.addEventListener("click", () => {
      setText("file-name", files[i].name);
      show(row);
    });
    const decision = row.error ? row.error : row.thresholded_label ?? NOT_AVAILABLE;
    const p = probabilityText(row[`p_${config.positive}`]);
    tr.append(cell(files[i].name), cell(decision), cell(p));
    const action = document.createElement("td");
    action.append(choose);
    tr.append(action);
    body.append(tr);
  });
}

function showExam(rows, files) {
  const exam = byId("exam");
  exam.hidden = false;
  setText("exam-size", `${files.length} files`);
  showLevels(rows);
  showImages(rows, files);
}

function fail(message) {
  byId("result").hidden = false;
  byId("answer").hidden = true;
  const error = byId("error");
  error.hidden = false;
  error.textContent = message;
}

function requestFor(images, files) {
  // One file: as any client would send it. Several: one exam, every row with its key.
  if (files.length === 1) {
    return { columns: ["image", "id", "explain"], data: [[images[0], files[0].name, true]] };
  }
  return {
    columns: ["image", "id", "explain", "group", "study"],
    data: images.map((image, i) => [image, files[i].name, true, EXAM_KEY, EXAM_KEY]),
  };
}

async function score(files) {
  const several = files.length > 1;
  const what = several ? `${files.length} files as one exam` : files[0].name;
  setText("file-name", files[0].name);
  setText("status", `Scoring ${what}…`);
  byId("exam").hidden = true;
  document.body.classList.add("busy");
  try {
    const images = await Promise.all(files.map(readBase64));
    const response = await fetch("invocations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ dataframe_split: requestFor(images, files) }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      fail(`The server refused the request (HTTP ${response.status}): ${answer.message || ""}`);
    } else {
      if (several) showExam(answer.predictions, files);
      show(answer.predictions[0]);
    }
    setText("status", `Scored ${what}.`);
  } catch (error) {
    fail(`Could not reach the server: ${error}`);
    setText("status", "");
  } finally {
    document.body.classList.remove("busy");
    document.body.dataset.scored = String(Number(document.body.dataset.scored || 0) + 1);
  }
}

for (const span of document.querySelectorAll(".positive-class")) span.textContent = config.positive;
const input = byId("file");
const zone = byId("drop-zone");
input.addEventListener("change", () => {
  if (input.files.length) score(Array.from(input.files));
});
zone.addEventListener("dragover", (event) => {
  event.preventDefault();
  zone.classList.add("over");
});
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  if (event.dataTransfer.files.length) score(Array.from(event.dataTransfer.files));
});
