// Locaria Batch console: live rows from the status stream, uploads, downloads and actions.
// Plain JS, no build step.  Every state change is a POST carrying the page's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const page = document.body.dataset.page;
window.locariaStatusEvents = [];  // {id, status, receivedAt} for each message (the browser test reads it)

async function post(url, body, options = {}) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf, ...(options.raw ? {} : { "Content-Type": "application/json" }) },
    body: options.raw ? body : JSON.stringify(body ?? {}),
  });
  const data = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok || data.error) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function toast(text, tone = "", link = null) {
  const box = document.createElement("div");
  box.className = `toast ${tone}`;
  box.textContent = text;
  if (link) {
    const a = document.createElement("a");
    a.href = link.href; a.textContent = ` ${link.text}`;
    box.append(a);
  }
  document.getElementById("toasts").append(box);
  setTimeout(() => box.remove(), 6000);
}

function confirmAction(question) {
  const dialog = document.getElementById("confirm");
  dialog.querySelector(".question").textContent = question;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"),
                                                          { once: true }));
}

// -- the status stream ---------------------------------------------------------------------------
function connect(onStatus, onResync) {
  const live = document.getElementById("live");
  const show = (state, label) => { live.dataset.state = state; live.querySelector(".label").textContent = label; };
  const source = new EventSource("/events");
  source.onopen = () => show("live", "live");
  source.onerror = () => show("down", "reconnecting");
  source.onmessage = (event) => {
    const receivedAt = performance.timeOrigin + performance.now();
    const message = JSON.parse(event.data);
    window.locariaStatusEvents.push({ ...message, receivedAt });
    onStatus(message);
  };
  source.addEventListener("resync", () => onResync());
}

// -- the files page ------------------------------------------------------------------------------
function filesPage() {
  const table = document.getElementById("files");
  const body = table.tBodies[0];
  const filters = new URLSearchParams(location.search);
  const pending = new Set();
  let timer = null;

  async function rows(params) {
    const response = await fetch(`/files/rows?${params}`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const holder = document.createElement("tbody");
    holder.innerHTML = await response.text();
    return { rows: [...holder.rows], more: response.headers.get("x-more") === "1" };
  }

  // rows on screen are refreshed; a new row joins the top of an unfiltered first page.  Refreshes
  // run one after another: a slow answer must never land over a newer one.
  let refreshing = Promise.resolve();
  function refresh(ids) {
    // a failed refresh is dropped quietly: the live indicator already says the server is away
    refreshing = refreshing.then(() => replaceRows(ids)).catch(() => {});
    return refreshing;
  }

  async function replaceRows(ids) {
    const { rows: fresh } = await rows(new URLSearchParams({ ids: ids.join(",") }));
    const showNew = table.dataset.firstPage === "1" && table.dataset.filtered === "0";
    for (const row of fresh.sort((a, b) => Number(a.dataset.id) - Number(b.dataset.id))) {
      const old = body.querySelector(`tr[data-id="${row.dataset.id}"]`);
      if (old) {
        row.querySelector(".check input").checked = old.querySelector(".check input").checked;
        old.replaceWith(row);
      } else if (showNew && row.dataset.status !== "DELETED") {
        body.prepend(row);
      } else {
        continue;
      }
      row.classList.add("flash");
    }
    document.querySelector(".empty")?.remove();
    updateBulk();
  }

  function queue(id) {
    pending.add(id);
    clearTimeout(timer);
    timer = setTimeout(() => { const ids = [...pending]; pending.clear(); refresh(ids); }, 30);
  }

  connect((message) => queue(message.id), () => location.reload());

  // progress moves without status changes: refresh rows that are working every 2 s
  setInterval(() => {
    const busy = [...body.querySelectorAll("tr")].filter((row) => row.querySelector("progress"));
    if (busy.length) refresh(busy.map((row) => row.dataset.id));
  }, 2000);

  document.getElementById("more").addEventListener("click", async (event) => {
    const last = body.rows[body.rows.length - 1];
    const params = new URLSearchParams(filters);
    params.set("before", last.dataset.id);
    const { rows: next, more } = await rows(params);
    body.append(...next);
    event.target.hidden = !more;
  });

  // selection and bulk actions
  const bulk = document.getElementById("bulk");
  function selected() { return [...body.querySelectorAll(".check input:checked")].map((box) => Number(box.value)); }
  function updateBulk() {
    const ids = selected();
    bulk.hidden = ids.length === 0;
    document.getElementById("bulk-count").textContent = `${ids.length} selected`;
  }
  body.addEventListener("change", updateBulk);
  document.getElementById("select-all").addEventListener("change", (event) => {
    body.querySelectorAll(".check input").forEach((box) => { box.checked = event.target.checked; });
    updateBulk();
  });
  bulk.addEventListener("click", async (event) => {
    const action = event.target.dataset.bulk;
    if (!action) return;
    const ids = selected();
    const words = action === "retry" ? "Retry" : "Cancel the jobs of";
    if (!(await confirmAction(`${words} ${ids.length} file${ids.length === 1 ? "" : "s"}?`))) return;
    await fileAction(action, ids);
  });

  // uploads
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  document.getElementById("choose-files").addEventListener("click", () => input.click());
  input.addEventListener("change", () => { uploadAll([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadAll([...event.dataTransfer.files]);
  });

  // downloads
  const dialog = document.getElementById("download-dialog");
  document.getElementById("open-download").addEventListener("click", () => dialog.showModal());
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "ok") return;
    const form = new FormData(document.getElementById("download-form"));
    const [kind, value] = String(form.get("source")).split(/:(.*)/s);
    try {
      const made = await post("/api/downloads", {
        format: form.get("format"), name: form.get("name"), [kind]: value,
      });
      toast(`Download requested: file ${made.id}.`, "", { href: `/files/${made.id}`, text: "Open" });
      queue(made.id);
    } catch (error) { toast(`Download not requested: ${error.message}`, "bad"); }
  });
}

async function uploadAll(files) {
  const list = document.getElementById("uploads");
  for (const file of files) {
    const item = document.createElement("li");
    item.textContent = `${file.name}: uploading…`;
    list.append(item);
    try {
      const start = await post("/api/uploads", { name: file.name, size: file.size });
      let id;
      if (start.mode === "presigned") {
        const put = await fetch(start.url, { method: "PUT", body: file });
        if (!put.ok) throw new Error(`storage refused the upload (${put.status})`);
        id = (await post(`/api/uploads/${start.id}/complete`, {})).id;
      } else {
        id = (await post(`/api/uploads/local?name=${encodeURIComponent(file.name)}`, file, { raw: true })).id;
      }
      item.textContent = `${file.name}: file ${id}`;
    } catch (error) {
      item.textContent = `${file.name}: ${error.message}`;
      item.className = "failed";
    }
  }
}

async function fileAction(action, ids) {
  try {
    const result = await post(`/api/files/${action}`, { ids });
    const verb = action === "retry" ? "retried" : "cancelled";
    toast(`${result.done.length} file${result.done.length === 1 ? "" : "s"} ${verb}` +
          (result.refused.length ? `; ${result.refused.map((r) => r.reason).join("; ")}` : ""),
          result.refused.length ? "bad" : "");
  } catch (error) { toast(error.message, "bad"); }
}

// -- a file's page -------------------------------------------------------------------------------
function filePage() {
  const detail = document.querySelector(".detail");
  const id = detail ? Number(detail.dataset.fileId) : null;
  async function reload() {
    const response = await fetch(location.href, { credentials: "same-origin" });
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    document.getElementById("main").replaceWith(doc.getElementById("main"));
  }
  connect((message) => { if (message.id === id) reload(); }, reload);
  document.body.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-file-action]");
    if (!button) return;
    const action = button.dataset.fileAction;
    const question = action === "retry" ? `Run file ${id}'s job again?` : `Cancel the job of file ${id}?`;
    if (await confirmAction(question)) await fileAction(action, [id]);
  });
}

// -- the queue page ------------------------------------------------------------------------------
function queuePage() {
  const holder = document.getElementById("queue-body");
  const reload = async () => {
    const response = await fetch("/queue?fragment=1", { credentials: "same-origin" });
    if (response.ok) holder.innerHTML = await response.text();
  };
  setInterval(reload, 5000);
  connect(() => {}, reload);
  holder.addEventListener("click", async (event) => {
    const docker = event.target.dataset.retryFailed;
    if (!docker) return;
    const filter = { states: ["failed"], dockers: [docker], since: "1h" };
    try {
      const { count } = await post("/api/jobs/retry", { ...filter, count_only: true });
      if (!(await confirmAction(`Retry ${count} failed ${docker} job${count === 1 ? "" : "s"} of the last hour?`))) return;
      const result = await post("/api/jobs/retry", filter);
      toast(`${result.retried.length} file(s) retried` + (result.skipped.length ? `, ${result.skipped.length} skipped` : ""));
      reload();
    } catch (error) { toast(error.message, "bad"); }
  });
}

({ files: filesPage, file: filePage, queue: queuePage })[page]?.();
