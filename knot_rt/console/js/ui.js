// Small DOM helpers: elements built with textContent only (never innerHTML with data), the notice line.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(id) {
  return document.getElementById(id);
}

let noticeTimer = null;

// One visible line for what went wrong (or right); errors stay until dismissed or replaced.
export function notice(text, kind = "error") {
  const box = $("notice");
  $("notice-text").textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (kind !== "error") noticeTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

export function clearNotice() {
  $("notice").hidden = true;
}

export function showError(error) {
  notice(error && error.explain ? error.explain() : String(error && error.message ? error.message : error));
}

export function time(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}

export function debounce(fn, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}
