// The public VN_AQI page: reads the public /v1 endpoints only, draws the stations on a coordinate plot
// (no map tiles: there is no network to fetch them from) and in a list, and one station's last 48 hours
// with plotly.js (served by the API process from the `plotly` PyPI package).
"use strict";

const HOUR_MS = 3600 * 1000;
const WINDOW_MS = 48 * HOUR_MS;
const VN_OFFSET_MS = 7 * HOUR_MS; // Vietnam keeps UTC+7 all year
const NO_AQI = "#BDBDBD";
// Whole-country frame, so a few stations still sit where they are in Vietnam (degrees).
const FRAME = { south: 8.2, north: 23.6, west: 102.0, east: 110.0 };
const MAP_W = 420, MAP_H = 640, PAD = 28;

const TEXT = {
  vi: {
    title: "Chất lượng không khí (VN_AQI)",
    legend: "Thang VN_AQI (QĐ 1459/QĐ-TCMT)",
    map: "Bản đồ trạm",
    map_note: "Vị trí theo kinh độ và vĩ độ; nhãn là mã tỉnh.",
    list: "Danh sách trạm",
    col_station: "Trạm", col_province: "Tỉnh", col_aqi: "AQI", col_category: "Mức", col_hour: "Giờ",
    aqi_chart: "AQI theo giờ, 48 giờ qua",
    means_chart: "Trung bình giờ của từng thông số, 48 giờ qua",
    footer: "Dữ liệu: /v1 (giờ Việt Nam, UTC+7). Chỉ trung bình hợp lệ được công bố.",
    no_aqi: "Chưa có AQI",
    as_of: "Cập nhật lúc",
    window: (a, b) => `Từ ${a} đến ${b} (giờ Việt Nam)`,
    hour_axis: "Giờ Việt Nam (UTC+7), cuối giờ",
    missing_hours: (n) => `${n} giờ không có AQI`,
    no_means: "Không có trung bình giờ nào trong 48 giờ qua.",
    no_coords: (n) => `${n} trạm chưa có toạ độ (chỉ có trong danh sách).`,
    dominant: "Thông số chính",
  },
  en: {
    title: "Air quality (VN_AQI)",
    legend: "VN_AQI scale (Decision 1459/QĐ-TCMT)",
    map: "Station map",
    map_note: "Positions by longitude and latitude; labels are province codes.",
    list: "Stations",
    col_station: "Station", col_province: "Province", col_aqi: "AQI", col_category: "Category", col_hour: "Hour",
    aqi_chart: "Hourly AQI, last 48 hours",
    means_chart: "Hourly means of each parameter, last 48 hours",
    footer: "Data: /v1 (Vietnam time, UTC+7). Only valid means are published.",
    no_aqi: "No AQI yet",
    as_of: "Updated at",
    window: (a, b) => `From ${a} to ${b} (Vietnam time)`,
    hour_axis: "Vietnam time (UTC+7), end of the hour",
    missing_hours: (n) => `${n} hours without an AQI`,
    no_means: "No hourly means in the last 48 hours.",
    no_coords: (n) => `${n} stations have no coordinates (listed only).`,
    dominant: "Dominant parameter",
  },
};

const state = {
  lang: new URLSearchParams(location.search).get("lang") === "en" ? "en" : "vi",
  categories: [],
  stations: [],
  aqi: new Map(), // station -> newest hourly StationAqi
  loadedAt: null,
  selected: null,
  detail: null, // {station, start, end, aqi: [...], means: [...]}
};

const t = (key) => TEXT[state.lang][key];
const el = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

function vnTime(date) {
  return new Date(date.getTime() + VN_OFFSET_MS).toISOString().slice(0, 16).replace("T", " ");
}

// "2026-12-02T13:00:00+07:00" -> "2026-12-02 13:00:00": plotly draws it as written, i.e. in Vietnam time.
const plotTime = (moment) => moment.local.slice(0, 19).replace("T", " ");

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = `${body.code}: ${body.message}`;
    } catch (_) {
      // not JSON: keep the status text
    }
    throw new Error(`${url}: ${response.status} ${detail}`);
  }
  return response.json();
}

// Every row of a paged /v1 endpoint (next_cursor until null; a cursor carries the query).
async function walk(path, params) {
  const rows = [];
  let cursor = null;
  do {
    const query = new URLSearchParams(cursor === null ? params : { cursor, limit: params.limit || "1000" });
    const page = await getJson(`${path}?${query}`);
    rows.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor !== null);
  return rows;
}

function showError(err) {
  const box = el("error");
  box.textContent = String(err && err.message ? err.message : err);
  box.hidden = false;
  console.error(err);
}

function categoryName(category) {
  return category ? category[state.lang === "vi" ? "name_vi" : "name_en"] : t("no_aqi");
}

function colourOf(stationId) {
  const a = state.aqi.get(stationId);
  return a && a.category ? a.category.hex : NO_AQI;
}

// ---------------------------------------------------------------------------------------------- legend

function renderLegend() {
  const list = el("legend-items");
  list.replaceChildren();
  for (const c of state.categories) {
    const li = document.createElement("li");
    li.dataset.hex = c.hex;
    li.innerHTML = `<span class="swatch" style="background:${c.hex}"></span>`;
    li.append(`${c.low}–${c.high} ${state.lang === "vi" ? c.name_vi : c.name_en}`);
    list.append(li);
  }
  const none = document.createElement("li");
  none.innerHTML = `<span class="swatch" style="background:${NO_AQI}"></span>`;
  none.append(t("no_aqi"));
  list.append(none);
}

// ---------------------------------------------------------------------------------------------- map

function mapProjection(placed) {
  const lats = placed.map((s) => s.latitude).concat([FRAME.south, FRAME.north]);
  const lons = placed.map((s) => s.longitude).concat([FRAME.west, FRAME.east]);
  const south = Math.min(...lats), north = Math.max(...lats);
  const west = Math.min(...lons), east = Math.max(...lons);
  const kx = Math.cos(((south + north) / 2) * (Math.PI / 180)); // equirectangular at the middle latitude
  const scale = Math.min((MAP_W - 2 * PAD) / ((east - west) * kx), (MAP_H - 2 * PAD) / (north - south));
  const x0 = (MAP_W - (east - west) * kx * scale) / 2, y0 = (MAP_H - (north - south) * scale) / 2;
  return {
    south, north, west, east,
    x: (lon) => x0 + (lon - west) * kx * scale,
    y: (lat) => y0 + (north - lat) * scale,
  };
}

function svg(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderMap() {
  const map = el("map");
  map.replaceChildren();
  map.setAttribute("viewBox", `0 0 ${MAP_W} ${MAP_H}`);
  const placed = state.stations.filter((s) => s.latitude !== null && s.longitude !== null);
  const p = mapProjection(placed);
  for (let lat = Math.ceil(p.south / 2) * 2; lat <= p.north; lat += 2) {
    map.append(svg("line", { class: "grid", x1: p.x(p.west), x2: p.x(p.east), y1: p.y(lat), y2: p.y(lat) }));
    map.append(svg("text", { class: "tick", x: 2, y: p.y(lat) - 2 }, `${lat}°N`));
  }
  for (let lon = Math.ceil(p.west / 2) * 2; lon <= p.east; lon += 2) {
    map.append(svg("line", { class: "grid", y1: p.y(p.south), y2: p.y(p.north), x1: p.x(lon), x2: p.x(lon) }));
    map.append(svg("text", { class: "tick", x: p.x(lon) + 2, y: MAP_H - 4 }, `${lon}°E`));
  }
  const provinces = new Map();
  for (const s of placed) {
    const code = s.province_code || "?";
    const at = provinces.get(code) || { lat: 0, lon: 0, n: 0 };
    provinces.set(code, { lat: at.lat + s.latitude, lon: at.lon + s.longitude, n: at.n + 1 });
  }
  for (const [code, at] of provinces) {
    const label = svg("text", { class: "province", x: p.x(at.lon / at.n) + 10, y: p.y(at.lat / at.n) - 8 }, code);
    label.dataset.province = code;
    map.append(label);
  }
  for (const s of placed) {
    const a = state.aqi.get(s.id);
    const dot = svg("circle", { class: "station", cx: p.x(s.longitude), cy: p.y(s.latitude), r: 7, fill: colourOf(s.id) });
    dot.dataset.station = s.id;
    if (s.id === state.selected) dot.classList.add("selected");
    dot.append(svg("title", {}, `${s.name || s.id} (${s.id}): ${a && a.aqi !== null ? a.aqi : "–"} ${categoryName(a && a.category)}`));
    dot.addEventListener("click", () => select(s.id));
    map.append(dot);
  }
  const unplaced = state.stations.length - placed.length;
  if (unplaced > 0) {
    map.append(svg("text", { class: "tick", x: 4, y: 14 }, t("no_coords")(unplaced)));
  }
}

// ---------------------------------------------------------------------------------------------- list

function renderList() {
  const body = el("stations").querySelector("tbody");
  body.replaceChildren();
  // Worst air first; stations without an AQI last, then by id.
  const aqiOf = (s) => (state.aqi.get(s.id) && state.aqi.get(s.id).aqi !== null ? state.aqi.get(s.id).aqi : -1);
  const ordered = [...state.stations].sort((a, b) => aqiOf(b) - aqiOf(a) || a.id.localeCompare(b.id));
  for (const s of ordered) {
    const a = state.aqi.get(s.id);
    const row = document.createElement("tr");
    row.dataset.station = s.id;
    if (s.id === state.selected) row.classList.add("selected");
    const cells = [
      `${s.name || s.id} (${s.id})`,
      s.province_code || "",
      a && a.aqi !== null ? String(a.aqi) : "–",
      null,
      a ? plotTime(a.end).slice(0, 16) : "",
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 3) {
        td.className = "category";
        td.innerHTML = `<span class="swatch" style="background:${colourOf(s.id)}"></span> `;
        td.append(categoryName(a && a.category));
      } else {
        td.textContent = text;
      }
      row.append(td);
    });
    row.addEventListener("click", () => select(s.id));
    body.append(row);
  }
}

// ---------------------------------------------------------------------------------------------- one station

async function select(stationId) {
  state.selected = stationId;
  renderMap();
  renderList();
  const end = new Date();
  const start = new Date(end.getTime() - WINDOW_MS);
  const period = { start: start.toISOString(), end: end.toISOString() };
  try {
    const id = encodeURIComponent(stationId);
    const [aqi, means] = await Promise.all([
      walk(`/v1/stations/${id}/aqi/hourly`, { ...period, limit: "1000" }),
      walk(`/v1/stations/${id}/means/hourly`, { ...period, limit: "1000" }),
    ]);
    if (state.selected !== stationId) return; // another station was chosen meanwhile
    state.detail = { station: stationId, start, end, aqi, means };
    renderDetail();
  } catch (err) {
    showError(err);
  }
}

const chartConfig = { displayModeBar: false, responsive: true, staticPlot: false };

function timeAxis(d) {
  return {
    type: "date",
    title: { text: t("hour_axis") },
    tickformat: "%H:%M\n%d/%m",
    range: [vnTime(d.start), vnTime(d.end)],
  };
}

function renderDetail() {
  const d = state.detail;
  if (!d) return;
  const section = el("detail");
  section.hidden = false;
  section.dataset.station = d.station;
  section.dataset.start = d.start.toISOString();
  section.dataset.end = d.end.toISOString();
  const s = state.stations.find((x) => x.id === d.station) || { id: d.station, name: "" };
  el("detail-title").textContent = `${s.name || s.id} (${s.id})`;
  const withAqi = d.aqi.filter((r) => r.aqi !== null);
  const missing = d.aqi.length - withAqi.length;
  el("detail-window").textContent =
    t("window")(vnTime(d.start), vnTime(d.end)) + (missing > 0 ? ` · ${t("missing_hours")(missing)}` : "");

  const aqiChart = el("aqi-chart");
  aqiChart.dataset.points = String(withAqi.length);
  Plotly.react(
    aqiChart,
    [
      {
        type: "bar",
        x: withAqi.map((r) => plotTime(r.end)),
        y: withAqi.map((r) => r.aqi),
        marker: { color: withAqi.map((r) => r.category.hex), line: { color: "#555", width: 0.5 } },
        text: withAqi.map((r) => `${categoryName(r.category)}${r.dominant ? ` · ${t("dominant")}: ${r.dominant}` : ""}`),
        hovertemplate: "%{x}<br>AQI %{y}<br>%{text}<extra></extra>",
        textposition: "none",
      },
    ],
    { margin: { l: 50, r: 10, t: 10, b: 60 }, xaxis: timeAxis(d), yaxis: { title: { text: "AQI" }, rangemode: "tozero" } },
    chartConfig,
  );

  const series = new Map(); // "parameter device" -> its hours, published (valid) or not
  for (const m of d.means) {
    const key = `${m.parameter}\u0000${m.device}`;
    if (!series.has(key)) series.set(key, { parameter: m.parameter, device: m.device, unit: m.unit, rows: [] });
    series.get(key).rows.push(m); // an unpublished (invalid) hour stays, as a gap in the line
  }
  const devices = new Set(d.means.map((m) => m.device));
  const holder = el("means-charts");
  for (const old of holder.querySelectorAll(".means-chart")) Plotly.purge(old);
  holder.replaceChildren();
  if (series.size === 0) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = t("no_means");
    holder.append(p);
  }
  const ordered = [...series.values()].sort((a, b) => (a.parameter + a.device).localeCompare(b.parameter + b.device));
  for (const one of ordered) {
    const div = document.createElement("div");
    div.className = "means-chart";
    div.dataset.parameter = one.parameter;
    div.dataset.device = one.device;
    div.dataset.points = String(one.rows.filter((r) => r.mean !== null).length);
    holder.append(div);
    const label = `${one.parameter}${devices.size > 1 ? ` (${one.device})` : ""}${one.unit ? `, ${one.unit}` : ""}`;
    Plotly.react(
      div,
      [
        {
          type: "scatter",
          mode: "lines+markers",
          connectgaps: false,
          x: one.rows.map((r) => plotTime(r.end)),
          y: one.rows.map((r) => r.mean),
          marker: { size: 5, color: "#1f5f99" },
          line: { color: "#1f5f99", width: 1.5 },
          hovertemplate: "%{x}<br>%{y}<extra></extra>",
        },
      ],
      {
        margin: { l: 60, r: 10, t: 28, b: 50 },
        title: { text: label, font: { size: 13 }, x: 0.01 },
        xaxis: timeAxis(d),
        yaxis: { rangemode: "tozero" },
      },
      chartConfig,
    );
  }
}

// ---------------------------------------------------------------------------------------------- language

function applyLanguage() {
  document.documentElement.lang = state.lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const button of document.querySelectorAll(".lang button")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
  }
  el("as-of").textContent = state.loadedAt ? `${t("as_of")} ${vnTime(state.loadedAt)} (UTC+7)` : "";
  renderLegend();
  renderMap();
  renderList();
  renderDetail();
}

function setLanguage(lang) {
  state.lang = lang;
  const url = new URL(location.href);
  url.searchParams.set("lang", lang);
  history.replaceState(null, "", url);
  applyLanguage();
}

// ---------------------------------------------------------------------------------------------- start

async function start() {
  for (const button of document.querySelectorAll(".lang button")) {
    button.addEventListener("click", () => setLanguage(button.dataset.lang));
  }
  try {
    const [categories, stations, latest] = await Promise.all([
      getJson("/page/aqi-categories.json"),
      walk("/v1/stations", { limit: "1000" }),
      getJson("/v1/aqi/latest"),
    ]);
    state.categories = categories;
    state.stations = stations;
    state.aqi = new Map(latest.map((a) => [a.station, a]));
    state.loadedAt = new Date();
    applyLanguage();
    document.body.dataset.ready = "true";
    const wanted = new URLSearchParams(location.search).get("station");
    if (wanted) await select(wanted);
  } catch (err) {
    showError(err);
  }
}

start();
