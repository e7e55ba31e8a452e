// The search page: results grouped by article, filters and facet counts, a recency toggle, pages, and an article
// view with related articles. All state lives in the URL (?q=…&source=…&page=…, ?article=…), so links can be
// shared and the browser's back and forward buttons work. It only calls the documented HTTP API.
"use strict";

const PAGE_SIZE = 10;
const PASSAGES_PER_ARTICLE = 3;
const RECENT_HALF_LIFE_DAYS = 30;
const RELATED = 5;
const FACET_FIELDS = [["source", "Source"], ["tag", "Tag"], ["published_month", "Month"]];
const FACET_SHOWN = 8;
// Search state in the URL; the article view adds "article" and "passage".
const SEARCH_KEYS = ["q", "source", "tag", "after", "before", "recent", "page"];

const $ = (id) => document.getElementById(id);
const statusEl = $("status");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function setStatus(text, isError) {
  statusEl.className = isError ? "error" : "";
  statusEl.textContent = text;
}

// -- API ------------------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

let inflight = null; // the request whose answer will be shown; a newer one aborts it

async function api(path, params) {
  if (inflight) inflight.abort();
  const controller = new AbortController();
  inflight = controller;
  const headers = {};
  const key = sessionStorage.getItem("semsearch-api-key");
  if (key) headers.Authorization = "Bearer " + key;
  const url = params ? path + "?" + params : path;
  const response = await fetch(url, { headers, signal: controller.signal });
  let data = null;
  try { data = await response.json(); } catch { /* not JSON: reported below */ }
  if (inflight === controller) inflight = null;
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

function articlePath(id) {
  return "/articles/" + id.split("/").map(encodeURIComponent).join("/");
}

// -- state ----------------------------------------------------------------------------------------------------

function currentState() {
  const p = new URLSearchParams(location.search);
  return {
    q: (p.get("q") || "").trim(),
    source: p.getAll("source"),
    tag: p.getAll("tag"),
    after: p.get("after") || "",
    before: p.get("before") || "",
    recent: p.get("recent") === "1",
    page: Math.max(1, parseInt(p.get("page") || "1", 10) || 1),
    article: p.get("article"),
    passage: p.get("passage"),
  };
}

function searchParams(state, overrides) {
  const s = { ...state, ...overrides };
  const p = new URLSearchParams();
  if (s.q) p.set("q", s.q);
  for (const v of s.source) p.append("source", v);
  for (const v of s.tag) p.append("tag", v);
  if (s.after) p.set("after", s.after);
  if (s.before) p.set("before", s.before);
  if (s.recent) p.set("recent", "1");
  if (s.page > 1) p.set("page", String(s.page));
  return p;
}

function searchUrl(state, overrides) {
  const p = searchParams(state, overrides);
  return p.toString() ? "?" + p : "/";
}

function articleUrl(state, id, passageId) {
  const p = searchParams(state, {});
  p.set("article", id);
  if (passageId !== undefined) p.set("passage", String(passageId));
  return "?" + p;
}

function navigate(url) {
  history.pushState(null, "", url);
  render();
}

// The API request for one page of a search (without the cursor). Ages for "recent first" count back from today,
// fixed for the whole walk through the pages.
function apiSearchParams(state) {
  const p = new URLSearchParams({ q: state.q, k: PAGE_SIZE, group_by: "article", per_article: PASSAGES_PER_ARTICLE });
  for (const v of state.source) p.append("source", v);
  for (const v of state.tag) p.append("tag", v);
  if (state.after) p.set("published_after", state.after);
  if (state.before) p.set("published_before", state.before);
  if (state.recent) {
    p.set("recency_half_life_days", RECENT_HALF_LIFE_DAYS);
    p.set("recency_as_of", new Date().toISOString().slice(0, 10));
  }
  return p;
}

// Pages already fetched, per search: the cursor that fetches page n is cursors[n - 1]; page 1 also brings the
// facet counts. A page reached by a shared link is found by walking the cursors from page 1.
const searches = new Map();

async function fetchPage(state) {
  const base = apiSearchParams(state);
  const key = base.toString();
  let entry = searches.get(key);
  if (!entry) {
    entry = { cursors: [null], facets: null, pages: new Map() };
    searches.set(key, entry);
  }
  for (let n = 1; n <= state.page; n++) {
    if (entry.pages.has(n)) continue;
    const cursor = entry.cursors[n - 1];
    if (n > 1 && !cursor) return { entry, data: null, last: n - 1 }; // asked beyond the last page
    const params = new URLSearchParams(base);
    if (cursor) params.set("cursor", cursor);
    else for (const [field] of FACET_FIELDS) params.append("facet", field);
    const data = await api("/search", params);
    if (!cursor) entry.facets = data.facets;
    entry.cursors[n] = data.next_cursor;
    entry.pages.set(n, data);
  }
  return { entry, data: entry.pages.get(state.page) };
}

// -- rendering: search ----------------------------------------------------------------------------------------

function formatDate(iso) {
  if (!iso) return null;
  const date = new Date(iso.length === 10 ? iso + "T00:00:00Z" : iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" });
}

function formatMonth(value) {
  const date = new Date(value + "-01T00:00:00Z");
  if (Number.isNaN(date.getTime())) return value;
  return date.toLocaleDateString(undefined, { year: "numeric", month: "long", timeZone: "UTC" });
}

function monthRange(value) {
  const [y, m] = value.split("-").map(Number);
  const last = new Date(Date.UTC(y, m, 0)).getUTCDate();
  return [`${value}-01`, `${value}-${String(last).padStart(2, "0")}`];
}

function metaLine(item) {
  const meta = el("div", { class: "meta" });
  const parts = [];
  if (item.published) parts.push(el("time", { datetime: item.published, text: formatDate(item.published) }));
  else parts.push(el("span", { class: "undated", text: "undated" }));
  if (item.source) parts.push(el("span", { class: "source", text: item.source }));
  parts.forEach((part, i) => meta.append(...(i ? [" · ", part] : [part])));
  if (item.tags && item.tags.length) {
    meta.append(" · ", ...item.tags.map((t) => el("span", { class: "tag", text: t })));
  }
  return meta;
}

// A passage's text with its best sentences marked (highlight offsets are relative to the passage).
function passageText(hit) {
  const p = el("p", { class: "passage" });
  let pos = 0;
  for (const h of [...(hit.highlights || [])].sort((a, b) => a.start - b.start)) {
    if (h.start < pos) continue;
    p.append(hit.text.slice(pos, h.start), el("mark", { text: hit.text.slice(h.start, h.end) }));
    pos = h.end;
  }
  p.append(hit.text.slice(pos));
  return p;
}

function renderArticleHit(state, article) {
  const link = el("a", { href: articleUrl(state, article.article_id), "data-article": article.article_id,
                         class: "result-link", text: article.title || article.article_id });
  const tags = article.passages.length ? article.passages[0].tags : [];
  const passages = el("ol", { class: "passages" });
  for (const hit of article.passages) {
    const para = hit.paragraph === hit.last_paragraph ? `¶ ${hit.paragraph}` : `¶ ${hit.paragraph}–${hit.last_paragraph}`;
    passages.append(el("li", {}, passageText(hit),
      el("a", { class: "para", href: articleUrl(state, article.article_id, hit.passage_id), text: para,
                "aria-label": `${para} in the article` })));
  }
  return el("li", { class: "article-hit", "data-article": article.article_id },
    el("h3", { class: "title" }, link), metaLine({ ...article, tags }), passages);
}

function facetGroup(state, field, label, values) {
  const group = el("fieldset", { class: "facet", "data-facet": field }, el("legend", { text: label }));
  const selected = field === "source" ? state.source : field === "tag" ? state.tag : [];
  const present = new Set(values.map((v) => v.value));
  // Selected values stay visible (and can be unticked) even when the filter leaves them without a count.
  const rows = [...values, ...selected.filter((v) => !present.has(v)).map((v) => ({ value: v, count: 0 }))];
  const list = el("div", { class: "values" });
  rows.forEach((row, i) => {
    let checked;
    if (field === "published_month") {
      const [from, to] = monthRange(row.value);
      checked = state.after === from && state.before === to;
    } else {
      checked = selected.includes(row.value);
    }
    const box = el("input", { type: "checkbox", checked, "data-value": row.value });
    box.addEventListener("change", () => toggleFacet(state, field, row.value, box.checked));
    const text = field === "published_month" ? formatMonth(row.value) : row.value;
    const labelEl = el("label", {}, box, " " + text + " ", el("span", { class: "count", text: `(${row.count})` }));
    if (i >= FACET_SHOWN && !checked) labelEl.hidden = true;
    list.append(labelEl);
  });
  group.append(list);
  if (rows.length > FACET_SHOWN) {
    const more = el("button", { type: "button", class: "more", text: `Show all ${rows.length}` });
    more.addEventListener("click", () => {
      list.querySelectorAll("label[hidden]").forEach((l) => { l.hidden = false; });
      more.remove();
    });
    group.append(more);
  }
  return group;
}

function toggleFacet(state, field, value, on) {
  const change = { page: 1 };
  if (field === "published_month") {
    const [from, to] = monthRange(value);
    Object.assign(change, on ? { after: from, before: to } : { after: "", before: "" });
  } else {
    const list = field === "source" ? state.source : state.tag;
    const next = on ? [...list, value] : list.filter((v) => v !== value);
    change[field === "source" ? "source" : "tag"] = next;
  }
  navigate(searchUrl(state, change));
}

function renderFacets(state, facets) {
  const box = $("facets");
  box.replaceChildren();
  if (!facets) return;
  for (const [field, label] of FACET_FIELDS) {
    let values = facets.counts[field] || [];
    // Months read best in time order, newest first; sources and tags by count, as the API gives them.
    if (field === "published_month") values = [...values].sort((a, b) => b.value.localeCompare(a.value));
    if (values.length || (field === "source" && state.source.length) || (field === "tag" && state.tag.length)) {
      box.append(facetGroup(state, field, label, values));
    }
  }
}

function renderActiveFilters(state) {
  const list = $("active-filters");
  list.replaceChildren();
  const chip = (text, change) => {
    const button = el("button", { type: "button", "aria-label": `Remove filter ${text}`, text: text + " ✕" });
    button.addEventListener("click", () => navigate(searchUrl(state, { ...change, page: 1 })));
    list.append(el("li", {}, button));
  };
  for (const v of state.source) chip(`source: ${v}`, { source: state.source.filter((s) => s !== v) });
  for (const v of state.tag) chip(`tag: ${v}`, { tag: state.tag.filter((t) => t !== v) });
  if (state.after) chip(`from ${state.after}`, { after: "" });
  if (state.before) chip(`to ${state.before}`, { before: "" });
  if (state.recent) chip("recent first", { recent: false });
}

async function renderSearch(state, focusResults) {
  $("refine").hidden = false;
  $("recent").checked = state.recent;
  $("after").value = state.after;
  $("before").value = state.before;
  renderActiveFilters(state);
  const results = $("results");
  const main = $("main");
  main.setAttribute("aria-busy", "true");
  setStatus("Searching…");
  try {
    const { entry, data, last } = await fetchPage(state);
    renderFacets(state, entry.facets);
    results.replaceChildren();
    if (!data) {
      setStatus(`There are only ${last} pages of results.`, true);
      renderPager(state, entry, last);
      return;
    }
    for (const article of data.articles) results.append(renderArticleHit(state, article));
    const found = entry.facets ? entry.facets.articles : null;
    if (!data.articles.length) {
      setStatus(`No articles match "${state.q}"` + (state.source.length || state.tag.length || state.after ||
        state.before ? ". Try removing a filter." : "."));
    } else {
      const first = (state.page - 1) * PAGE_SIZE + 1;
      const range = `Articles ${first}–${first + data.articles.length - 1}` + (found ? ` of about ${found}` : "");
      setStatus(`${range} · page ${state.page} · ${data.took_ms} ms`);
    }
    renderPager(state, entry, data.next_cursor ? null : state.page);
    if (focusResults) {
      const firstLink = results.querySelector("a.result-link");
      (firstLink || main).focus();
    }
  } catch (err) {
    if (err.name === "AbortError") return;
    showError(err);
  } finally {
    main.removeAttribute("aria-busy");
  }
}

function renderPager(state, entry, lastPage) {
  const pager = $("pager");
  pager.hidden = state.page === 1 && lastPage === 1;
  $("prev").disabled = state.page <= 1;
  $("next").disabled = lastPage !== null && state.page >= lastPage;
  $("page-number").textContent = `Page ${state.page}`;
}

// -- rendering: article -----------------------------------------------------------------------------------------

async function renderArticle(state) {
  const box = $("article");
  const related = $("related-list");
  $("back").href = searchUrl(state, {});
  $("back").textContent = state.q ? `← Back to results for "${state.q}"` : "← Back to search";
  box.replaceChildren();
  related.replaceChildren();
  setStatus("Loading the article…");
  try {
    const article = await api(articlePath(state.article));
    const heading = el("h2", { tabindex: "-1", text: article.title || article.id });
    box.append(heading, metaLine(article));
    if (article.url) {
      box.append(el("p", { class: "meta" },
        el("a", { href: article.url, rel: "noopener noreferrer", text: "Original article ↗" })));
    }
    let target = null;
    for (const passage of article.passages) {
      const p = el("p", { id: `passage-${passage.passage_id}`, text: passage.text });
      if (String(passage.passage_id) === state.passage) {
        p.className = "hit";
        target = p;
      }
      box.append(p);
    }
    document.title = `${article.title} · semsearch`;
    setStatus("");
    heading.focus();
    if (target) target.scrollIntoView({ block: "center" });
    const data = await api(articlePath(state.article) + "/related", new URLSearchParams({ k: RELATED }));
    if (!data.articles.length) related.append(el("li", { class: "meta", text: "No related articles." }));
    for (const item of data.articles) {
      related.append(el("li", { "data-article": item.article_id },
        el("a", { href: articleUrl(state, item.article_id), class: "result-link",
                  "data-article": item.article_id, text: item.title || item.article_id }),
        metaLine({ ...item, tags: item.passages.length ? item.passages[0].tags : [] })));
    }
  } catch (err) {
    if (err.name === "AbortError") return;
    showError(err);
  }
}

function showError(err) {
  if (err.status === 401) {
    $("key-form").hidden = false;
    $("api-key").focus();
  }
  setStatus("Error: " + err.message, true);
}

// -- routing and events -----------------------------------------------------------------------------------------

async function render(focusResults) {
  const state = currentState();
  $("q").value = state.q;
  const inArticle = Boolean(state.article);
  $("search-view").hidden = inArticle;
  $("article-view").hidden = !inArticle;
  document.title = state.q ? `${state.q} · semsearch` : "semsearch";
  if (inArticle) return renderArticle(state);
  if (!state.q) {
    $("results").replaceChildren();
    $("refine").hidden = true;
    $("pager").hidden = true;
    $("active-filters").replaceChildren();
    try {
      const stats = await api("/stats");
      setStatus(`Search ${stats.articles.toLocaleString()} articles (${stats.passages.toLocaleString()} passages).`);
    } catch (err) {
      if (err.name !== "AbortError") showError(err);
    }
    return;
  }
  return renderSearch(state, focusResults);
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  navigate(searchUrl({ ...currentState(), article: null }, { q, page: 1 }));
});

$("recent").addEventListener("change", (event) => {
  navigate(searchUrl(currentState(), { recent: event.target.checked, page: 1 }));
});

$("apply-dates").addEventListener("click", () => {
  navigate(searchUrl(currentState(), { after: $("after").value, before: $("before").value, page: 1 }));
});

$("prev").addEventListener("click", () => {
  const state = currentState();
  history.pushState(null, "", searchUrl(state, { page: state.page - 1 }));
  render(true);
});

$("next").addEventListener("click", () => {
  const state = currentState();
  history.pushState(null, "", searchUrl(state, { page: state.page + 1 }));
  render(true);
});

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("semsearch-api-key", $("api-key").value);
  $("key-form").hidden = true;
  render();
});

// Links inside the page (results, passages, related articles, back, home) change the view without a reload;
// modified clicks (new tab, new window) keep the browser's behaviour.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey ||
      event.altKey || link.origin !== location.origin || link.pathname !== "/" ||
      link.getAttribute("href").startsWith("#")) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});

function typing(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement || target.isContentEditable;
}

function moveFocus(step) {
  const view = $("article-view").hidden ? $("results") : $("related-list");
  const links = [...view.querySelectorAll("a.result-link")];
  if (!links.length) return;
  const at = links.indexOf(document.activeElement);
  const next = at === -1 ? (step > 0 ? 0 : links.length - 1) : Math.min(links.length - 1, Math.max(0, at + step));
  links[next].focus();
  links[next].scrollIntoView({ block: "nearest" });
}

document.addEventListener("keydown", (event) => {
  if (event.metaKey || event.ctrlKey || event.altKey) return;
  if (event.key === "Escape") {
    if (typing(event.target)) { event.target.blur(); return; }
    if (!$("article-view").hidden) { event.preventDefault(); navigate($("back").getAttribute("href")); }
    return;
  }
  if (typing(event.target)) return;
  if (event.key === "/") { event.preventDefault(); $("q").focus(); $("q").select(); }
  else if (event.key === "j") { event.preventDefault(); moveFocus(1); }
  else if (event.key === "k") { event.preventDefault(); moveFocus(-1); }
});

window.addEventListener("popstate", () => render());
render();
