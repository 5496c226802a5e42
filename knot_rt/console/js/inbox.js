// The support inbox: reports by status with unread counts (support:<network>), one conversation at a time
// (report:<id>: messages, typing, read markers), images, assignment, resolve and reopen.
import { $, debounce, el, showError, time } from "./ui.js";

const TYPING_EVERY_MS = 2000;

export class Inbox {
  constructor(session, feed) {
    this.session = session;
    this.feed = feed;
    this.status = "open";
    this.reports = [];
    this.stops = [];
    this.chat = null;
    this.fresh = new Set();
    this.refresh = debounce(() => this.load().catch(showError), 250);
  }

  async start() {
    for (const button of document.querySelectorAll("#view-support .filters button")) {
      button.onclick = () => {
        this.status = button.dataset.status;
        for (const b of document.querySelectorAll("#view-support .filters button")) {
          b.setAttribute("aria-pressed", b === button ? "true" : "false");
        }
        this.load().catch(showError);
      };
    }
    for (const id of this.session.networksFor("support")) {
      this.stops.push(this.feed.subscribe(`support:${id}`, (frame) => {
        if (frame.event === "report.created" && frame.data) this.fresh.add(frame.data.report_id);
        this.refresh();
        if (this.chat && frame.data && frame.data.report_id === this.chat.id) this.chat.reportChanged(frame.data);
      }));
    }
    await this.load().catch(showError);
  }

  destroy() {
    for (const stop of this.stops) stop();
    this.stops = [];
    if (this.chat) this.chat.stop();
    this.chat = null;
    $("report-list").replaceChildren();
    $("conversation").replaceChildren(el("p", { class: "hint", text: "Choose a report." }));
  }

  async load() {
    this.generation = (this.generation || 0) + 1;
    const generation = this.generation;
    const [shown, open, resolved] = await Promise.all([
      this.session.call("GET", `/support/reports?status=${this.status}&limit=100`),
      this.session.call("GET", "/support/reports?status=open&limit=100"),
      this.session.call("GET", "/support/reports?status=resolved&limit=100"),
    ]);
    if (generation !== this.generation) return; // a later load (another status, a newer event) wins
    this.reports = shown.data;
    const unread = (rows) => rows.reduce((sum, r) => sum + (r.unread_count || 0), 0);
    const counts = { open: unread(open.data), resolved: unread(resolved.data) };
    counts.all = counts.open + counts.resolved;
    for (const [status, count] of Object.entries(counts)) {
      const badge = document.querySelector(`#view-support [data-unread="${status}"]`);
      badge.textContent = count ? String(count) : "";
      badge.setAttribute("aria-label", `${count} unread`);
    }
    const total = $("inbox-unread");
    total.textContent = String(counts.all);
    total.hidden = !counts.all;
    const list = $("report-list");
    list.replaceChildren(...this.reports.map((r) => this.item(r)));
  }

  item(r) {
    const selected = this.chat && this.chat.id === r.report_id;
    const button = el("button", { type: "button", class: "report-item", "aria-current": selected ? "true" : "false",
      dataset: { report: r.report_id, status: r.status, unread: r.unread_count },
      onclick: () => this.openReport(r.report_id) },
      el("span", { class: "title" }, `#${r.report_id} · ${r.author ? r.author.email : "rider"}`,
        this.fresh.has(r.report_id) ? el("span", { class: "new", text: "new" }) : null,
        r.unread_count ? el("span", { class: "count", text: r.unread_count, "aria-label": `${r.unread_count} unread` }) : null),
      el("span", { class: "last", text: `${r.sender === "support" ? "Support: " : ""}${r.message}` }),
      el("span", { class: "meta", text: `${r.status}${r.assigned_to ? ` · assigned to ${r.assigned_to === this.session.userId ? "you" : `agent ${r.assigned_to}`}` : ""} · ${time(r.date)}` }));
    return el("li", {}, button);
  }

  async openReport(id) {
    if (this.chat) this.chat.stop();
    this.fresh.delete(id);
    const summary = this.reports.find((r) => r.report_id === id) || { report_id: id };
    this.chat = new Conversation(this, summary);
    await this.chat.start().catch(showError);
    for (const b of document.querySelectorAll("#report-list .report-item")) {
      b.setAttribute("aria-current", Number(b.dataset.report) === id ? "true" : "false");
    }
  }
}

class Conversation {
  constructor(inbox, summary) {
    this.inbox = inbox;
    this.session = inbox.session;
    this.feed = inbox.feed;
    this.id = summary.report_id;
    this.summary = summary;
    this.messages = new Map();
    this.readByUser = 0;
    this.lastTyping = 0;
    this.typingTimer = null;
    this.stopFeed = null;
    this.list = el("ol", { class: "messages", "aria-label": "Messages" });
    this.typing = el("p", { class: "typing", role: "status", "aria-live": "polite" });
    this.status = el("p", { class: "report-status" });
    this.text = el("textarea", { rows: "2", maxlength: "2000", "aria-label": "Your answer", placeholder: "Write an answer… (Ctrl+Enter sends)" });
    this.image = el("input", { type: "file", accept: "image/jpeg,image/png,image/webp", "aria-label": "Image to send" });
  }

  async start() {
    const root = $("conversation");
    this.buttons = {
      assign: this.action("Assign to me", () => this.session.call("PUT", `/support/reports/${this.id}/assign`, { agent_id: this.session.userId })),
      release: this.action("Release", () => this.session.call("PUT", `/support/reports/${this.id}/assign`, { agent_id: null })),
      resolve: this.action("Resolve", () => this.session.call("PUT", `/support/reports/${this.id}/resolve`)),
      reopen: this.action("Reopen", () => this.session.call("PUT", `/support/reports/${this.id}/reopen`)),
    };
    const actions = el("div", { class: "report-actions", role: "group", "aria-label": "Report actions" },
      ...Object.values(this.buttons));
    const form = el("form", { class: "composer" }, this.text,
      el("div", { class: "row" }, el("button", { type: "submit" }, "Send"), this.image,
        el("button", { type: "button", onclick: () => this.sendImage() }, "Send image")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.send();
      }
    });
    this.text.addEventListener("input", () => this.sendTyping());
    root.replaceChildren(
      el("h2", { tabindex: "-1", text: `Report #${this.id}${this.summary.author ? ` · ${this.summary.author.email}` : ""}` }),
      this.status, actions, this.list, this.typing, form);
    root.dataset.report = this.id;
    this.paintStatus(this.summary);
    this.stopFeed = this.feed.subscribe(`report:${this.id}`, (frame) => this.event(frame),
      (reply) => showError({ explain: () => `Feed refused report ${this.id}: ${reply.message || reply.code}` }));
    const [report, messages] = await Promise.all([
      this.session.call("GET", `/reports/${this.id}`),
      this.session.call("GET", `/reports/${this.id}/messages?limit=100`),
    ]);
    const data = report.data || {};
    this.readByUser = data.user_read_up_to || data.read_up_to_user || 0;
    this.paintStatus({ ...this.summary, ...data });
    const ordered = [...messages.data].sort((a, b) => a.message_id - b.message_id);
    for (const m of ordered) this.add(m);
    this.markRead();
    root.querySelector("h2").focus();
  }

  stop() {
    if (this.stopFeed) this.stopFeed();
    clearTimeout(this.typingTimer);
  }

  action(label, run) {
    return el("button", { type: "button", onclick: async () => {
      try {
        await run();
        this.inbox.refresh();
        const report = await this.session.call("GET", `/reports/${this.id}`);
        this.paintStatus({ ...this.summary, ...report.data });
      } catch (error) {
        showError(error);
      }
    } }, label);
  }

  paintStatus(r) {
    this.summary = { ...this.summary, ...r };
    const s = this.summary;
    const status = s.status || (s.resolved ? "resolved" : "open");
    const assigned = s.assigned_to ? (s.assigned_to === this.session.userId ? "you" : `agent ${s.assigned_to}`) : "nobody";
    this.status.textContent = `Status: ${status} · assigned to ${assigned}`;
    this.status.dataset.status = status;
    if (this.buttons) {  // what makes sense now; the API still decides
      this.buttons.assign.hidden = s.assigned_to === this.session.userId;
      this.buttons.release.hidden = !s.assigned_to;
      this.buttons.resolve.hidden = status === "resolved";
      this.buttons.reopen.hidden = status !== "resolved";
    }
  }

  reportChanged(data) {
    this.paintStatus(data);
  }

  event(frame) {
    const d = frame.data || {};
    if (frame.event === "message.created") {
      this.add(d);
      this.typing.textContent = "";
      if (d.side === "user") this.markRead();
    } else if (frame.event === "typing") {
      if (d.side !== "user") return;
      this.typing.textContent = "The rider is typing…";
      clearTimeout(this.typingTimer);
      const left = Math.max(500, (d.until || Date.now() + 5000) - Date.now());
      this.typingTimer = setTimeout(() => { this.typing.textContent = ""; }, left);
    } else if (frame.event === "message.read") {
      if (d.side === "user") {
        this.readByUser = Math.max(this.readByUser, d.message_id || d.read_up_to || 0);
        this.paintRead();
      }
    } else if (frame.event.startsWith("report.")) {
      this.paintStatus({ ...d, status: frame.event === "report.resolved" ? "resolved" :
        frame.event === "report.reopened" ? "open" : d.status });
    }
  }

  add(m) {
    if (!m || !m.message_id || this.messages.has(m.message_id)) return;
    const body = el("div", { class: "body" });
    if (m.message) body.append(el("p", { text: m.message }));
    if (m.image) {
      const url = typeof m.image === "string" ? m.image : m.image.url;
      const img = el("img", { alt: `Image sent by ${m.side === "user" ? "the rider" : "support"}`, class: "chat-image" });
      body.append(img);
      if (url) this.session.blobUrl(url).then((blob) => { img.src = blob; }, () => { img.alt = "image unavailable"; });
    }
    const item = el("li", { class: `message ${m.side}`, dataset: { message: m.message_id, side: m.side } },
      el("span", { class: "who", text: m.side === "user" ? "Rider" : m.author_id === this.session.userId ? "You" : "Support" }),
      body, el("time", { text: time(m.date) }), el("span", { class: "read" }));
    this.messages.set(m.message_id, item);
    const after = [...this.messages.keys()].sort((a, b) => a - b);
    const next = after.find((id) => id > m.message_id);
    if (next && this.messages.get(next).parentNode === this.list) this.list.insertBefore(item, this.messages.get(next));
    else this.list.append(item);
    this.paintRead();
    item.scrollIntoView({ block: "nearest" });
  }

  paintRead() {
    for (const [id, item] of this.messages) {
      const mark = item.querySelector(".read");
      mark.textContent = item.dataset.side === "support" && id <= this.readByUser ? "✓ seen" : "";
    }
  }

  markRead() {
    const last = Math.max(0, ...this.messages.keys());
    if (!last) return;
    if (!this.feed.send({ type: "read", topic: `report:${this.id}`, message_id: last })) {
      this.session.call("POST", `/reports/${this.id}/read`, { message_id: last }).catch(() => {});
    }
    setTimeout(() => this.inbox.refresh(), 300);
  }

  sendTyping() {
    const now = Date.now();
    if (now - this.lastTyping < TYPING_EVERY_MS) return;
    this.lastTyping = now;
    this.feed.send({ type: "typing", topic: `report:${this.id}` });
  }

  async send() {
    const text = this.text.value.trim();
    if (!text) return;
    try {
      const body = await this.session.call("POST", `/reports/${this.id}/messages`, { message: text });
      this.text.value = "";
      if (body.data && body.data.message_id) this.add(body.data);
      this.inbox.refresh();
    } catch (error) {
      showError(error);
    }
  }

  async sendImage() {
    if (!this.image.files.length) {
      showError({ explain: () => "Choose an image first." });
      return;
    }
    const form = new FormData();
    form.append("chat_image", this.image.files[0]);
    try {
      const body = await this.session.call("POST", `/reports/${this.id}/images`, undefined, { form });
      this.image.value = "";
      if (body.data && body.data.message_id) this.add(body.data);
    } catch (error) {
      showError(error);
    }
  }
}
