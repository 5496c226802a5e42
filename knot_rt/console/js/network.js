// The live network: the map (Leaflet, SVG vector layers, no tiles unless configured), the cluster list, and the
// cluster panel with its stations' live spots, commands and maintenances. Live through the feed: cluster:<id>,
// station:<id>, maintenance:<network>; free-floating vehicles follow the map route (no feed topic carries them).
import { $, debounce, el, showError, time } from "./ui.js";

const VEHICLE_POLL_MS = 4000;
const SEVERITIES = ["info", "low", "high"];

// Leaflet puts a string tooltip in as HTML: data from the API always goes in as text.
function tip(text) {
  return el("span", { text });
}

function availability(c) {
  if (c.cluster_is_down) return "down";
  if (!c.available_vehicles) return "empty";
  return c.available_vehicles < 3 ? "low" : "ok";
}

const COLOURS = { ok: "#1a7f37", low: "#bf8700", empty: "#cf222e", down: "#6e7781" };
const LOCKS = { 0: "open", 1: "locked", 2: "error" };

export class NetworkView {
  constructor(session, feed, config) {
    this.session = session;
    this.feed = feed;
    this.config = config;
    this.L = null;
    this.map = null;
    this.clusters = new Map(); // id -> {data, marker, item}
    this.vehicleMarkers = new Map();
    this.maintenanceMarkers = new Map();
    this.stops = [];
    this.panelStops = [];
    this.poll = null;
    this.area = null;
    this.open = null; // the cluster id in the panel
    this.maintenanceTypes = null;
    this.refreshMaintenanceCounts = debounce(() => this.loadMaintenanceCounts().catch(() => {}), 500);
  }

  async start() {
    const filter = $("cluster-filter");
    filter.value = "";
    filter.oninput = () => this.filterList(filter.value);
    $("panel").replaceChildren(el("p", { class: "hint", text: "Choose a cluster on the map or in the list." }));
    try {
      const networks = (await this.session.call("GET", "/networks")).data;
      this.area = boundsOf(networks);
      await this.setUpMap(networks);
      await this.loadMap();
      this.poll = setInterval(() => this.loadVehicles().catch(() => {}), VEHICLE_POLL_MS);
      if (this.session.can("maintenance")) {
        await this.loadMaintenanceCounts();
        for (const id of this.session.networksFor("maintenance")) {
          this.stops.push(this.feed.subscribe(`maintenance:${id}`, () => this.refreshMaintenanceCounts()));
        }
      }
    } catch (error) {
      showError(error);
    }
    $("view-network").dataset.loaded = "true";
  }

  shown() {
    if (this.map) setTimeout(() => this.map.invalidateSize(), 0);
  }

  destroy() {
    clearInterval(this.poll);
    for (const stop of [...this.stops, ...this.panelStops]) stop();
    this.stops = [];
    this.panelStops = [];
    if (this.map) this.map.remove();
    this.map = null;
    $("cluster-list").replaceChildren();
    $("panel").replaceChildren();
    delete $("view-network").dataset.loaded;
  }

  async setUpMap(networks) {
    if (!this.config.map_library) {
      const missing = $("map-missing");
      missing.textContent = this.config.missing || "The map library is not installed on the server.";
      missing.hidden = false;
      return;
    }
    $("map-missing").hidden = true;
    this.L = await import("/console/vendor/leaflet-src.esm.js");
    const L = this.L;
    this.map = L.map("map", { preferCanvas: false, zoomSnap: 0.25, keyboard: true });
    if (this.config.tiles) L.tileLayer(this.config.tiles, { maxZoom: 19 }).addTo(this.map);
    this.layers = {
      networks: L.layerGroup().addTo(this.map),
      zones: L.layerGroup().addTo(this.map),
      parkings: L.layerGroup().addTo(this.map),
      maintenance: L.layerGroup().addTo(this.map),
      clusters: L.layerGroup().addTo(this.map),
      vehicles: L.layerGroup().addTo(this.map),
    };
    L.control.layers(null, {
      "Networks": this.layers.networks, "Speed zones": this.layers.zones, "Parkings": this.layers.parkings,
      "Maintenances": this.layers.maintenance, "Clusters": this.layers.clusters,
      "Free-floating vehicles": this.layers.vehicles,
    }, { collapsed: true }).addTo(this.map);
    for (const n of networks) {
      if (n.shape && n.shape.length) {
        L.polygon(n.shape.map(([lng, lat]) => [lat, lng]), { className: "network-shape", color: "#0969da",
          weight: 2, fillOpacity: 0.04 }).bindTooltip(tip(n.name)).addTo(this.layers.networks);
      }
    }
    if (this.area) {
      this.map.fitBounds([[this.area.south, this.area.west], [this.area.north, this.area.east]], { padding: [10, 10] });
    } else {
      this.map.setView([48.58, 7.75], 13);
    }
  }

  query() {
    const a = this.area || { south: 48.5, north: 48.7, west: 7.6, east: 7.9 };
    const lat = (a.north + a.south) / 2;
    const lng = (a.east + a.west) / 2;
    const latdeg = Math.min(5, Math.max(0.01, (a.north - a.south) * 1.2));
    const lngdeg = Math.min(5, Math.max(0.01, (a.east - a.west) * 1.2));
    return `lat=${lat}&lng=${lng}&latdeg=${latdeg.toFixed(4)}&lngdeg=${lngdeg.toFixed(4)}&lang=en`;
  }

  async loadMap() {
    const body = await this.session.call("GET", `/map?${this.query()}`);
    const L = this.L;
    if (this.map) {
      for (const zone of body.speed_zones || []) {
        L.polygon(zone.shape.map(([lng, lat]) => [lat, lng]), { className: "speed-zone", color: "#bc4c00",
          weight: 1, dashArray: "4 4", fillOpacity: 0.08 })
          .bindTooltip(tip(`Speed zone: ${zone.max_speed} km/h`)).addTo(this.layers.zones);
      }
      for (const parking of body.parkings || []) {
        L.polygon(parking.shape.map(([lng, lat]) => [lat, lng]), { className: "parking", color: "#8250df",
          weight: 1, fillOpacity: 0.2 }).bindTooltip(tip(`Parking ${parking.virtual_parking_id}`))
          .addTo(this.layers.parkings);
      }
    }
    const sorted = [...(body.clusters || [])].sort((a, b) => a.name.localeCompare(b.name));
    const list = $("cluster-list");
    list.replaceChildren();
    for (const c of sorted) this.addCluster(c, list);
    this.showVehicles(body.vehicles || []);
  }

  addCluster(c, list) {
    const entry = { data: c, marker: null, item: null };
    this.clusters.set(c.cluster_id, entry);
    const button = el("button", { type: "button", class: "cluster-item", dataset: { cluster: c.cluster_id },
      onclick: () => this.openCluster(c.cluster_id) });
    entry.item = el("li", {}, button);
    list.append(entry.item);
    if (this.map) {
      entry.marker = this.L.circleMarker([c.latitude, c.longitude], { radius: 9, weight: 2, fillOpacity: 0.85,
        className: `cluster-marker cluster-${c.cluster_id}` })
        .bindTooltip(() => tip(`${entry.data.name}: ${entry.data.available_vehicles} vehicles, ${entry.data.free_spots} free spots`))
        .on("click", () => this.openCluster(c.cluster_id))
        .addTo(this.layers.clusters);
    }
    this.paintCluster(entry);
    this.stops.push(this.feed.subscribe(`cluster:${c.cluster_id}`, (frame) => {
      if (frame.event === "cluster.updated" || frame.event === "resync") this.clusterChanged(c.cluster_id, frame);
    }));
  }

  async clusterChanged(id, frame) {
    const entry = this.clusters.get(id);
    if (!entry) return;
    if (frame.event === "resync") {
      try {
        entry.data = { ...entry.data, ...(await this.session.call("GET", `/clusters/${id}?lang=en`)).data };
      } catch { return; }
    } else {
      entry.data = { ...entry.data, ...frame.data };
    }
    this.paintCluster(entry);
    if (this.open === id) this.paintClusterHead(entry.data);
  }

  paintCluster(entry) {
    const c = entry.data;
    const state = availability(c);
    const button = entry.item.firstChild;
    button.dataset.state = state;
    button.dataset.available = c.available_vehicles;
    button.replaceChildren(
      el("span", { class: `dot ${state}`, "aria-hidden": "true" }),
      el("span", { class: "name", text: c.name }),
      el("span", { class: "avail", text: `${c.available_vehicles} vehicles · ${c.free_spots}/${c.total_spots} free${c.cluster_is_down ? " · down" : ""}` }),
    );
    button.setAttribute("aria-label", `${c.name}: ${c.available_vehicles} vehicles available, ` +
      `${c.free_spots} of ${c.total_spots} spots free${c.cluster_is_down ? ", down" : ""}`);
    if (entry.marker) {
      entry.marker.setStyle({ color: "#fff", fillColor: COLOURS[state] });
      const path = entry.marker.getElement();
      if (path) {
        path.setAttribute("class", `leaflet-interactive cluster-marker cluster-${c.cluster_id} state-${state}`);
        path.dataset.available = c.available_vehicles;
      }
    }
  }

  filterList(text) {
    const needle = text.trim().toLowerCase();
    for (const entry of this.clusters.values()) {
      entry.item.hidden = needle !== "" && !entry.data.name.toLowerCase().includes(needle);
    }
  }

  async loadVehicles() {
    if (!this.map || document.hidden || $("view-network").hidden) return;
    const body = await this.session.call("GET", `/map?${this.query()}`);
    this.showVehicles(body.vehicles || []);
  }

  showVehicles(vehicles) {
    if (!this.map) return;
    const seen = new Set();
    for (const v of vehicles) {
      if (typeof v.latitude !== "number") continue;
      seen.add(v.vehicle_id);
      const label = `${v.serial_number} · ${v.state} · battery ${v.battery_level ?? "?"}%${v.connected ? "" : " · offline"}`;
      let marker = this.vehicleMarkers.get(v.vehicle_id);
      if (!marker) {
        marker = this.L.circleMarker([v.latitude, v.longitude], { radius: 4, weight: 1, color: "#fff",
          fillColor: "#0969da", fillOpacity: 0.9, className: `vehicle-marker vehicle-${v.vehicle_id}` })
          .bindTooltip(tip(label)).addTo(this.layers.vehicles);
        this.vehicleMarkers.set(v.vehicle_id, marker);
      } else {
        marker.setLatLng([v.latitude, v.longitude]);
        marker.setTooltipContent(tip(label));
      }
    }
    for (const [id, marker] of this.vehicleMarkers) {
      if (!seen.has(id)) {
        marker.remove();
        this.vehicleMarkers.delete(id);
      }
    }
  }

  async loadMaintenanceCounts() {
    const ids = [...this.clusters.keys()];
    if (!ids.length || !this.map) return;
    const counts = new Map();
    for (let i = 0; i < ids.length; i += 50) {
      const query = ids.slice(i, i + 50).map((id) => `clusters=${id}`).join("&");
      const body = await this.session.call("GET", `/maintenances/clusters?${query}`);
      for (const row of body.data) counts.set(row.cluster_id, row.maintenances);
    }
    this.layers.maintenance.clearLayers();
    this.maintenanceMarkers.clear();
    for (const [id, m] of counts) {
      const total = m.high_count + m.low_count + m.info_count;
      const entry = this.clusters.get(id);
      if (!total || !entry) continue;
      const icon = this.L.divIcon({ className: `maintenance-marker ${m.high_count ? "high" : "low"}`,
        html: "", iconSize: [14, 14], iconAnchor: [-4, 18] });
      const marker = this.L.marker([entry.data.latitude, entry.data.longitude], { icon, keyboard: false,
        title: `${entry.data.name}: ${total} maintenance(s), ${m.high_count} high` })
        .on("click", () => this.openCluster(id)).addTo(this.layers.maintenance);
      this.maintenanceMarkers.set(id, marker);
    }
  }

  // -- the cluster panel ---------------------------------------------------------------------------

  paintClusterHead(c) {
    const head = $("panel").querySelector(".cluster-head");
    if (!head) return;
    const state = availability(c);
    head.dataset.state = state;
    head.querySelector(".counts").textContent =
      `${c.available_vehicles} vehicles available · ${c.free_spots} of ${c.total_spots} spots free` +
      (c.cluster_is_down ? " · down" : "");
  }

  async openCluster(id) {
    for (const stop of this.panelStops) stop();
    this.panelStops = [];
    this.open = id;
    const entry = this.clusters.get(id);
    const panel = $("panel");
    const close = el("button", { type: "button", class: "close", "aria-label": "Close the panel",
      onclick: () => this.closePanel() }, "×");
    const head = el("div", { class: "cluster-head", dataset: { cluster: id } },
      close, el("h2", { tabindex: "-1", text: entry ? entry.data.name : `Cluster ${id}` }), el("p", { class: "counts" }));
    const stations = el("div", { class: "stations" }, el("p", { class: "hint", text: "Loading stations…" }));
    panel.replaceChildren(head, stations);
    panel.dataset.cluster = id;
    if (entry) {
      this.paintClusterHead(entry.data);
      if (this.map) this.map.panTo([entry.data.latitude, entry.data.longitude]);
    }
    head.querySelector("h2").focus();
    try {
      const spots = (await this.session.call("GET", `/clusters/${id}/spots`)).data;
      const stationIds = [...new Set(spots.map((s) => s.station_id))].sort((a, b) => a - b);
      if (this.open !== id) return;
      stations.replaceChildren();
      if (!stationIds.length) stations.append(el("p", { class: "hint", text: "No station in this cluster." }));
      for (const stationId of stationIds) {
        const view = new StationPanel(this, stationId, entry ? entry.data.network_id : null, id);
        stations.append(view.root);
        this.panelStops.push(() => view.stop());
        view.start();
      }
    } catch (error) {
      stations.replaceChildren(el("p", { class: "error", text: error.explain ? error.explain() : String(error) }));
    }
  }

  closePanel() {
    for (const stop of this.panelStops) stop();
    this.panelStops = [];
    const id = this.open;
    this.open = null;
    $("panel").replaceChildren(el("p", { class: "hint", text: "Choose a cluster on the map or in the list." }));
    const item = id && this.clusters.get(id);
    if (item) item.item.firstChild.focus();
  }

  async types() {
    if (!this.maintenanceTypes) {
      this.maintenanceTypes = (await this.session.call("GET", "/maintenances/types?lang=en")).data
        .filter((t) => !t.deletion_date);
    }
    return this.maintenanceTypes;
  }
}

// One station of the open cluster: live state, spots, commands with their outcome, maintenances.
class StationPanel {
  constructor(view, stationId, networkId, clusterId) {
    this.view = view;
    this.session = view.session;
    this.id = stationId;
    this.networkId = networkId;
    this.stopFeed = null;
    this.waiting = new Map(); // unlock id -> spot
    this.pictures = new Map(); // maintenance id -> picture URLs attached here
    this.reload = debounce(() => this.load().catch(() => {}), 500);
    this.reloadMaintenances = debounce(() => this.loadMaintenances().catch(() => {}), 300);
    const where = { networkId, clusterId };
    this.canCommand = this.session.can("stations", { write: true, ...where });
    this.canRead = this.session.can("stations", where) || this.session.can("maintenance", where);
    this.canMaintain = this.session.can("maintenance", where);
    this.canWriteMaintenance = this.session.can("maintenance", { write: true, ...where });
    this.state = el("span", { class: "badge", text: "…" });
    this.seen = el("span", { class: "seen" });
    this.outcome = el("p", { class: "outcome", role: "status", "aria-live": "polite" });
    this.table = el("table", { class: "spots" });
    this.events = el("ul", { class: "events", "aria-label": `Station ${stationId} events` });
    this.maintenances = el("div", { class: "maintenances" });
    this.root = el("section", { class: "station", dataset: { station: stationId }, "aria-label": `Station ${stationId}` },
      el("h3", {}, `Station ${stationId} `, this.state, " ", this.seen),
      this.canCommand ? this.commands() : null,
      this.outcome, this.table, this.events, this.maintenances);
  }

  async start() {
    if (!this.canRead) {
      this.state.textContent = "no access";
      this.table.replaceWith(el("p", { class: "hint", text: "You have no station rights here." }));
      return;
    }
    this.stopFeed = this.view.feed.subscribe(`station:${this.id}`, (frame) => this.event(frame),
      (reply) => this.note(`Feed refused station ${this.id}: ${reply.message || reply.code}`));
    await this.load().catch((error) => this.fail(error));
    if (this.canMaintain) await this.loadMaintenances().catch((error) => this.fail(error));
  }

  stop() {
    if (this.stopFeed) this.stopFeed();
  }

  fail(error) {
    this.outcome.textContent = error.explain ? error.explain() : String(error);
    this.outcome.dataset.kind = "error";
  }

  ok(text) {
    this.outcome.textContent = text;
    this.outcome.dataset.kind = "ok";
  }

  note(text) {
    const item = el("li", {}, el("time", { text: new Date().toLocaleTimeString() }), " ", text);
    this.events.prepend(item);
    while (this.events.children.length > 6) this.events.lastChild.remove();
  }

  event(frame) {
    if (frame.event === "spot.unlocked") {
      const d = frame.data || {};
      const text = `Station reported spot ${d.spot} unlocked${d.vehicle ? ` (vehicle ${d.vehicle})` : ""}`;
      this.note(text);
      this.patchSpot(d.spot, 0, null);
      if (d.unlock && this.waiting.has(d.unlock)) {
        this.waiting.delete(d.unlock);
        this.ok(text);
      }
      return; // the event is the news: a reload now could read the live view before the station's actor applied it
    } else if (frame.event === "spot.locked") {
      const d = frame.data || {};
      this.note(`Station reported spot ${d.spot} locked${d.vehicle ? ` (vehicle ${d.vehicle})` : ""}`);
      this.patchSpot(d.spot, 1, d.vehicle ?? null);
      return;
    } else if (frame.event.startsWith("maintenance.")) {
      this.note(`${frame.event.replace(".", " ")} #${(frame.data || {}).maintenance_id}`);
      this.reloadMaintenances();
    } else if (frame.event !== "station.state") {
      this.note(frame.event.replace(".", " "));
    }
    this.reload();
  }

  patchSpot(spot, lock, vehicle) {
    const row = this.table.querySelector(`tr[data-spot="${Number(spot)}"]`);
    if (!row) return;
    row.dataset.lock = lock;
    row.dataset.vehicle = vehicle ?? "";
    const cells = row.children;
    cells[1].textContent = vehicle ?? "–";
    cells[2].textContent = LOCKS[lock];
    cells[2].className = `lock lock-${lock}`;
    if (!vehicle) cells[3].textContent = "–";
  }

  commands() {
    const config = el("select", { "aria-label": "Setting" },
      el("option", { value: "volume", text: "volume" }), el("option", { value: "alarm-threshold", text: "alarm threshold" }));
    const value = el("input", { type: "number", min: "0", max: "100", value: "50", "aria-label": "Value (0-100)", class: "num" });
    const command = (label, run) => el("button", { type: "button", onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      this.outcome.textContent = `${label}: sent…`;
      this.outcome.dataset.kind = "pending";
      try {
        const text = await run();
        this.ok(`${label}: ${text}`);
      } catch (error) {
        this.fail(error);
      } finally {
        button.disabled = false;
      }
    } }, label);
    return el("div", { class: "commands", role: "group", "aria-label": `Station ${this.id} commands` },
      command("Ping", async () => answer(await this.session.call("POST", `/stations/${this.id}/ping`))),
      command("Refresh", async () => answer(await this.session.call("POST", `/stations/${this.id}/refresh`, {}))),
      command("Reboot", async () => {
        if (!confirm(`Reboot station ${this.id}?`)) return "cancelled";
        return answer(await this.session.call("POST", `/stations/${this.id}/reboot`));
      }),
      el("span", { class: "config" }, config, value,
        command("Set", async () => answer(await this.session.call("PUT", `/stations/${this.id}/config`,
          { config: config.value, value: Number(value.value) })))),
    );
  }

  async load() {
    const s = (await this.session.call("GET", `/stations/${this.id}`)).data;
    this.root.dataset.online = s.online ? "true" : "false";
    this.state.textContent = s.online ? "online" : "offline";
    this.state.className = `badge ${s.online ? "online" : "offline"}`;
    this.seen.textContent = s.last_seen ? `last seen ${time(s.last_seen)}` : "";
    const batteries = new Map((s.vehicles || []).map((v) => [v.vehicle_id ?? v.vehicle, v]));
    const rows = s.spots.map((spot) => {
      const v = spot.vehicle ? batteries.get(spot.vehicle) : null;
      const battery = v && (v.battery ?? v.battery_level);
      const unlock = this.canCommand ? el("button", { type: "button", class: "unlock",
        "aria-label": `Unlock spot ${spot.spot} of station ${this.id}`,
        onclick: (event) => this.unlock(spot.spot, event.currentTarget) }, "Unlock") : null;
      return el("tr", { dataset: { spot: spot.spot, lock: spot.lock, vehicle: spot.vehicle ?? "" } },
        el("td", { text: spot.spot }),
        el("td", { text: spot.vehicle ?? "–" }),
        el("td", { class: `lock lock-${spot.lock}`, text: LOCKS[spot.lock] ?? String(spot.lock) }),
        el("td", { text: battery === undefined || battery === null ? "–" : `${battery}%` }),
        el("td", { text: spot.in_maintenance ? "maintenance" : spot.is_accessible ? "" : "closed" }),
        el("td", {}, unlock));
    });
    this.table.replaceChildren(
      el("caption", { text: `Spots of station ${this.id}` }),
      el("thead", {}, el("tr", {}, ["Spot", "Vehicle", "Lock", "Battery", "State", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows));
    this.spots = s.spots;
  }

  async unlock(spot, button) {
    button.disabled = true;
    this.outcome.textContent = `Unlock of spot ${spot}: sent…`;
    this.outcome.dataset.kind = "pending";
    try {
      const body = await this.session.call("POST", "/spots/unlock/admin", { station_id: this.id, spot });
      const unlockId = body.data.unlock;
      this.waiting.set(unlockId, spot);
      this.ok(`Unlock of spot ${spot} accepted by the station (unlock ${unlockId}); waiting for its report…`);
    } catch (error) {
      this.fail(error);
    } finally {
      button.disabled = false;
    }
  }

  // -- maintenances of the station, its spots and their vehicles ------------------------------------

  async loadMaintenances() {
    if (!this.canMaintain) return;
    const spots = this.spots || [];
    const calls = [this.session.call("GET", `/maintenances/stations/${this.id}?lang=en`)];
    for (const spot of spots) {
      calls.push(this.session.call("GET", `/maintenances/spots/${spot.spot_id}?lang=en`));
      if (spot.vehicle) calls.push(this.session.call("GET", `/maintenances/vehicles?vehicle_id=${spot.vehicle}&lang=en`));
    }
    const answers = await Promise.all(calls);
    const seen = new Set();
    const rows = [];
    for (const answer of answers) {
      for (const m of answer.data) {
        if (!seen.has(m.maintenance_id)) {
          seen.add(m.maintenance_id);
          rows.push(m);
        }
      }
    }
    const list = el("ul", { class: "maintenance-list" }, rows.map((m) => this.maintenanceItem(m)));
    const form = this.canWriteMaintenance ? await this.openForm() : null;
    this.maintenances.replaceChildren(...[
      el("h4", { text: `Maintenances (${rows.length})` }),
      rows.length ? list : el("p", { class: "hint", text: "None open." }),
      form].filter(Boolean));
  }

  maintenanceItem(m) {
    const where = m.target_type === "vehicle" ? `vehicle ${m.vehicle_id}` :
      m.spot_id ? `spot ${this.spotNumber(m.spot_id)}` : "station";
    const item = el("li", { class: `maintenance sev-${m.severity}`, dataset: { maintenance: m.maintenance_id } },
      el("strong", { text: `${m.type_name || m.maintenance_type}` }), ` · ${where} · ${m.severity} · `,
      `since ${time(m.start_date)} by ${m.started_by}`,
      m.comment ? el("p", { class: "comment", text: m.comment }) : null);
    for (const url of this.pictures.get(m.maintenance_id) || []) {  // those attached from this panel
      const img = el("img", { class: "maintenance-picture", alt: `Picture of maintenance ${m.maintenance_id}` });
      item.append(img);
      this.session.blobUrl(url).then((blob) => { img.src = blob; }, () => { img.alt = "picture unavailable"; });
    }
    if (!this.canWriteMaintenance) return item;
    const comment = el("input", { type: "text", value: m.comment || "", maxlength: "2000", "aria-label": "Comment" });
    const severity = el("select", { "aria-label": "Severity" },
      SEVERITIES.map((s) => el("option", { value: s, text: s, selected: s === m.severity })));
    const picture = el("input", { type: "file", accept: "image/jpeg,image/png,image/webp", "aria-label": "Picture" });
    const act = (label, run) => el("button", { type: "button", onclick: async () => {
      try {
        this.ok(await run());
        this.reloadMaintenances();
      } catch (error) {
        this.fail(error);
      }
    } }, label);
    item.append(el("div", { class: "row" }, comment, severity,
      act("Update", async () => {
        await this.session.call("PUT", `/maintenances/${m.maintenance_id}`, { comment: comment.value, severity: severity.value });
        return `Maintenance ${m.maintenance_id} updated`;
      }),
      act("Resolve", async () => {
        await this.session.call("DELETE", `/maintenances/${m.maintenance_id}`);
        return `Maintenance ${m.maintenance_id} resolved`;
      }),
      picture,
      act("Attach picture", async () => {
        if (!picture.files.length) return "Choose a picture first";
        const form = new FormData();
        form.append("maintenance_picture", picture.files[0]);
        const body = await this.session.call("POST", `/maintenances/${m.maintenance_id}/pictures`, undefined, { form });
        const urls = this.pictures.get(m.maintenance_id) || [];
        urls.push(body.data.url);
        this.pictures.set(m.maintenance_id, urls);
        return `Picture attached to maintenance ${m.maintenance_id}`;
      })));
    return item;
  }

  spotNumber(spotId) {
    const spot = (this.spots || []).find((s) => s.spot_id === spotId);
    return spot ? spot.spot : `#${spotId}`;
  }

  async openForm() {
    let types = [];
    try {
      types = await this.view.types();
    } catch {
      return null;
    }
    const target = el("select", { "aria-label": "Target" },
      el("option", { value: "station", text: "the station" }),
      (this.spots || []).map((s) => el("option", { value: `spot:${s.spot_id}`, text: `spot ${s.spot}` })));
    const type = el("select", { "aria-label": "Maintenance type" });
    const fill = () => {
      const kind = target.value === "station" ? "station" : "spot";
      type.replaceChildren(...types.filter((t) => t.target_type === kind)
        .map((t) => el("option", { value: t.type_key, text: `${t.type_name} (${t.severity})` })));
    };
    target.addEventListener("change", fill);
    fill();
    const comment = el("input", { type: "text", maxlength: "2000", placeholder: "Comment", "aria-label": "Comment" });
    const form = el("form", { class: "open-maintenance", "aria-label": `Open a maintenance on station ${this.id}` },
      target, type, comment, el("button", { type: "submit" }, "Open maintenance"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const body = { maintenance_type: type.value, comment: comment.value || null };
        if (target.value === "station") {
          body.station_id = this.id;
          await this.session.call("POST", "/maintenances/stations", body);
        } else {
          body.spot_id = Number(target.value.split(":")[1]);
          await this.session.call("POST", "/maintenances/spots", body);
        }
        this.ok("Maintenance opened");
        this.reloadMaintenances();
      } catch (error) {
        this.fail(error);
      }
    });
    return form;
  }
}

function answer(body) {
  const data = body.data;
  if (data && typeof data === "object") {
    const parts = Object.entries(data).filter(([, v]) => typeof v !== "object").map(([k, v]) => `${k} ${v}`);
    return parts.length ? `done (${parts.join(", ")})` : "done";
  }
  return "done";
}

function boundsOf(networks) {
  let south = 90, north = -90, west = 180, east = -180;
  for (const n of networks) {
    const points = n.shape && n.shape.length ? n.shape : [[n.center_longitude, n.center_latitude]];
    for (const [lng, lat] of points) {
      if (typeof lat !== "number") continue;
      south = Math.min(south, lat); north = Math.max(north, lat);
      west = Math.min(west, lng); east = Math.max(east, lng);
    }
  }
  return south <= north ? { south, north, west, east } : null;
}

