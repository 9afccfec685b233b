// bglab web page and API docs page: plain JavaScript, no external scripts, no build step.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);

  function say(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.className = "message" + (kind ? " " + kind : "");
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && body.error) return body.error.message + " (" + body.error.code + ")";
    } catch (e) { /* not JSON */ }
    return "the server answered " + resp.status + " " + resp.statusText;
  }

  // ---------------------------------------------------------------------------------------------------- app
  function initApp() {
    const form = $("form");
    const image = $("image");
    const drop = $("drop");
    let urls = [];

    function mode() {
      return form.querySelector("input[name=mode]:checked").value;
    }

    function showOptions() {
      const m = mode();
      for (const el of document.querySelectorAll(".opt")) el.hidden = el.dataset.mode !== m;
    }

    // an image is shown only once it has loaded: a file the browser cannot draw never shows a broken icon
    function show(img, url, onFail) {
      img.hidden = true;
      img.onload = () => { img.hidden = false; };
      img.onerror = () => {
        img.hidden = true;
        img.removeAttribute("src");
        if (onFail) onFail();
      };
      img.src = url;
    }

    function clearResults() {
      for (const u of urls) URL.revokeObjectURL(u);
      urls = [];
      for (const id of ["mask", "result"]) {
        $(id).hidden = true;
        $(id).removeAttribute("src");
      }
      const link = $("download");
      link.hidden = true;
      link.removeAttribute("href");
    }

    // an error: the message, and no result of an earlier run left next to it
    function fail(text, focus) {
      clearResults();
      say(text, "error");
      if (focus) focus.focus();
    }

    let originalUrl = null;

    function preview() {
      clearResults();
      if (originalUrl) URL.revokeObjectURL(originalUrl);
      originalUrl = null;
      const original = $("original");
      original.hidden = true;
      original.removeAttribute("src");
      const file = image.files[0];
      if (!file) return;
      originalUrl = URL.createObjectURL(file);
      say("Ready: " + file.name + ". Choose a mode and press Remove background.");
      show(original, originalUrl, () => {
        say("Ready: " + file.name + " (this browser cannot preview it; the server will say whether it is " +
            "an image). Choose a mode and press Remove background.");
      });
    }

    async function loadBackends() {
      try {
        const resp = await fetch("/api/backends");
        if (!resp.ok) throw new Error(await errorText(resp));
        const select = $("backend");
        for (const b of await resp.json()) {
          if (!b.served || !b.available) continue;
          const opt = new Option(b.name + (b.default ? " (default)" : ""), b.name, b.default, b.default);
          opt.title = b.summary;
          select.add(opt);
        }
      } catch (e) {
        say("Could not list the backends: " + e.message, "error");
      }
    }

    async function submit(ev) {
      ev.preventDefault();
      const file = image.files[0];
      if (!file) {
        fail("Choose a photo first.", image);
        return;
      }
      const m = mode();
      const bg = $("background").files[0];
      if (m === "swap" && !bg) {
        fail("Mode Swap needs a new background image.", $("background"));
        return;
      }
      const fmt = $("format").value;
      if (fmt === "jpeg" && m === "cutout") {
        fail("A cut-out has transparency, which JPEG cannot store: choose PNG or WebP.", $("format"));
        return;
      }
      clearResults();
      const go = $("go");
      go.disabled = true;
      form.setAttribute("aria-busy", "true");
      say("Working on " + file.name + "…");
      try {
        const seg = new FormData();
        seg.append("image", file);
        seg.append("backend", $("backend").value);
        const segResp = await fetch("/api/segment", { method: "POST", body: seg });
        if (!segResp.ok) throw new Error(await errorText(segResp));
        const info = await segResp.json();
        show($("mask"), "data:image/png;base64," + info.mask_png_base64);

        const data = new FormData();
        data.append("image", file);
        data.append("backend", $("backend").value);
        data.append("mode", m);
        data.append("format", fmt);
        data.append("color", $("color").value);
        data.append("blur", $("blur").value);
        data.append("margin", $("margin").value);
        if (m === "swap") data.append("background", bg);
        const resp = await fetch("/api/remove", { method: "POST", body: data });
        if (!resp.ok) throw new Error(await errorText(resp));
        const url = URL.createObjectURL(await resp.blob());
        urls.push(url);
        show($("result"), url);
        const link = $("download");
        link.href = url;
        link.download = file.name.replace(/\.[^.]*$/, "") + "_" + m + "." + (fmt === "jpeg" ? "jpg" : fmt);
        link.hidden = false;
        const summary = info.width + "×" + info.height + " px, foreground " +
            Math.round(info.coverage * 100) + " %, backend " + info.backend + ".";
        if (info.status && info.status !== "done") {
          const what = info.status === "not-found" ? "Nothing found" : "Suspect mask";
          say(what + ": " + (info.qc.length ? info.qc.join("; ") + ". " : "") + summary +
              (info.hint ? " " + info.hint.replace(/^hint: /, "Hint: ") : ""), "warn");
        } else {
          say("Done: " + summary, "ok");
        }
      } catch (e) {
        fail("Could not process " + file.name + ": " + e.message);
      } finally {
        go.disabled = false;
        form.removeAttribute("aria-busy");
      }
    }

    image.addEventListener("change", preview);
    for (const r of form.querySelectorAll("input[name=mode]")) r.addEventListener("change", showOptions);
    $("blur").addEventListener("input", () => { $("blur-value").textContent = $("blur").value; });
    form.addEventListener("submit", submit);
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      if (ev.dataTransfer && ev.dataTransfer.files.length) {
        image.files = ev.dataTransfer.files;
        preview();
      }
    });
    showOptions();
    loadBackends();
  }

  // --------------------------------------------------------------------------------------------------- docs
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function schemaProps(spec, schema) {
    if (schema && schema.$ref) {
      schema = schema.$ref.split("/").slice(1).reduce((o, k) => (o ? o[k] : undefined), spec);
    }
    return (schema && schema.properties) || {};
  }

  async function initDocs() {
    const root = $("api-docs");
    try {
      const resp = await fetch("/openapi.json");
      const spec = await resp.json();
      root.textContent = "";
      for (const [path, ops] of Object.entries(spec.paths)) {
        for (const [method, op] of Object.entries(ops)) {
          const sec = el("section", undefined, "endpoint");
          const h = el("h2");
          h.append(el("code", method.toUpperCase() + " " + path));
          sec.append(h);
          if (op.summary) sec.append(el("p", op.summary));
          const body = op.requestBody && op.requestBody.content;
          if (body) {
            const [ctype, media] = Object.entries(body)[0];
            const props = schemaProps(spec, media.schema);
            sec.append(el("p", "Body: " + ctype));
            const table = el("table");
            const head = el("tr");
            for (const c of ["field", "type", "default", "description"]) head.append(el("th", c));
            table.append(head);
            for (const [name, p] of Object.entries(props)) {
              const row = el("tr");
              const kind = p.enum ? p.enum.join(" | ")
                : p.format === "binary" || (p.anyOf || []).some((a) => a.format === "binary") ? "file"
                : p.type || (p.anyOf || []).map((a) => a.type).join(" | ");
              row.append(el("td", name), el("td", kind),
                el("td", p.default === undefined ? "" : String(p.default)), el("td", p.description || ""));
              table.append(row);
            }
            sec.append(table);
          }
          const codes = Object.entries(op.responses || {}).map(([c, r]) => c + " " + (r.description || ""));
          sec.append(el("p", "Responses: " + codes.join("; ")));
          root.append(sec);
        }
      }
    } catch (e) {
      root.textContent = "Could not load /openapi.json: " + e.message;
    }
  }

  if (document.body.dataset.page === "docs") initDocs();
  else initApp();
})();
