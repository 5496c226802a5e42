// The app feed (feed-protocol.md): one socket, authenticated by its first frame, topics resumed with `since`
// after a reconnect. States: connecting, live, reconnecting, off.
export class Feed {
  constructor(session, onState) {
    this.session = session;
    this.onState = onState;
    this.topics = new Map(); // topic -> {since, handlers: Set}
    this.ws = null;
    this.ref = 0;
    this.pending = new Map(); // ref -> resolve
    this.authed = false;
    this.stopped = true;
    this.retry = 0;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.topics.clear();
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.state("off");
  }

  state(value) {
    this.current = value;
    this.onState(value);
  }

  connect() {
    if (this.stopped) return;
    this.state(this.retry ? "reconnecting" : "connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/application/ws`);
    this.ws = ws;
    this.authed = false;
    ws.onopen = () => {
      const ref = this.nextRef();
      this.pending.set(ref, (reply) => {
        if (reply.code !== 0) return;
        this.authed = true;
        this.retry = 0;
        this.state("live");
        for (const [topic, entry] of this.topics) this.sendSubscribe(topic, entry);
      });
      ws.send(JSON.stringify({ type: "auth", token: this.session.token, ref }));
    };
    ws.onmessage = (message) => this.receive(JSON.parse(message.data));
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.authed = false;
      this.pending.clear();
      if (this.stopped) return;
      if (event.code === 4401) {
        // A bad token or a closed session: a fresh token may still open it; otherwise the session is over.
        this.session.refresh().then((ok) => { if (ok) this.later(); }, () => this.later());
        this.state("reconnecting");
        return;
      }
      this.later();
    };
  }

  later() {
    if (this.stopped) return;
    this.retry += 1;
    this.state("reconnecting");
    const wait = Math.min(10000, 500 * 2 ** Math.min(this.retry, 5));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  // A fresh access token for the open socket (the contract allows a new auth frame at any time).
  reauth(token) {
    if (this.ws && this.authed) this.ws.send(JSON.stringify({ type: "auth", token, ref: this.nextRef() }));
  }

  nextRef() {
    this.ref += 1;
    return this.ref;
  }

  receive(frame) {
    if (frame.type === "reply") {
      const done = this.pending.get(frame.ref);
      this.pending.delete(frame.ref);
      if (done) done(frame);
      return;
    }
    if (frame.type !== "event") return;
    const entry = this.topics.get(frame.topic);
    if (!entry) return;
    if (typeof frame.seq === "number") entry.since = frame.seq;
    for (const handler of entry.handlers) {
      try {
        handler(frame);
      } catch (error) {
        console.error(error);
      }
    }
  }

  sendSubscribe(topic, entry) {
    const ref = this.nextRef();
    const frame = { type: "subscribe", topic, ref };
    if (entry.since !== null) frame.since = entry.since;
    this.pending.set(ref, (reply) => {
      if (reply.code !== 0 && entry.onRefused) entry.onRefused(reply);
    });
    this.ws.send(JSON.stringify(frame));
  }

  // Events of `topic` to `handler`; returns the function that stops them.
  subscribe(topic, handler, onRefused = null) {
    let entry = this.topics.get(topic);
    if (!entry) {
      entry = { since: null, handlers: new Set(), onRefused };
      this.topics.set(topic, entry);
      if (this.ws && this.authed) this.sendSubscribe(topic, entry);
    }
    entry.handlers.add(handler);
    return () => {
      entry.handlers.delete(handler);
      if (entry.handlers.size === 0 && this.topics.get(topic) === entry) {
        this.topics.delete(topic);
        if (this.ws && this.authed) {
          this.ws.send(JSON.stringify({ type: "unsubscribe", topic, ref: this.nextRef() }));
        }
      }
    };
  }

  // typing / read frames of a report's topic.
  send(frame) {
    if (!this.ws || !this.authed) return false;
    this.ws.send(JSON.stringify({ ...frame, ref: this.nextRef() }));
    return true;
  }
}
