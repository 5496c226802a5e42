"""The demo city: Strasbourg, with clusters at real places, stations, vehicles, parkings and speed zones.

``knot-rt demo`` loads it once (scale 1): 35 clusters at real places of the
city, 61 stations of 8 spots (488 spots), 244 docked vehicles and 66
free-floating ones (310), 8 virtual parkings and 4 speed zones, the pedestrian
Grande Île among them. Six of the free-floating vehicles carry an IoT module
(``vehicles.free_floating``: their own socket, ``vehicle-protocol.md``): each
stands in a virtual parking and, once unlocked, rides a loop through three
other clusters of the city and back into its parking (the first one crosses
the Grande Île's 10 km/h zone); the other 60 are plain vehicles left on the
street. ``knot-rt demo --scale N`` adds N - 1 more "units" of
the same size at generated places inside the network (N=33: 1,155 clusters,
2,013 stations, 10,032 vehicles), for benchmarks.

Idempotent and additive: clusters are known by their name in the network; a
cluster already there is left alone with its stations, spots, vehicles and
parking, so a second run adds nothing and a larger scale adds only the missing
units. Nothing is ever deleted. Everything is generated deterministically
(seeded), and written with a handful of bulk statements in one transaction.

Stations follow the simulator's conventions so that ``knot-rt simulate
--stations-file F`` brings the city to life: 8 spots each, vehicles
``station_id * 100 + spot`` docked in spots 1..4 (``spots.vehicle_id`` and
``vehicles.spot_id`` agree). Station secrets are stored as hashes only;
:func:`issue_station_secrets` issues new ones and returns them, for
``knot-rt demo --stations-file F``. So are the module vehicles' secrets:
:func:`issue_vehicle_secrets` issues new ones with each vehicle's position and
path, for ``knot-rt demo --vehicles-file F`` and ``knot-rt simulate
--vehicles-file F``.

The module vehicles are written here with the rest of the city, in its one
transaction and by a bulk statement, and not through
``VehicleService.create``: the demo loads before the services exist (``serve
--demo``) and every secret is issued anew at each start anyway.

A few maintenances are open in the city (:func:`ensure_maintenances`, ``DEMO_MAINTENANCES``): a ``high`` one
on a spot of the Gare Centrale (its scooter may not be rented until it is resolved), a ``low`` one on a scooter
docked at Place Kléber (linked to the demo rider's report about its brakes), and an automatic one on a station of
the Homme de Fer, as a station's fault would open it. They are written with the city, in its transaction, through
the maintenance store (``maintenance.store``: the same rows the service writes) but not through the service: no
feed event is published for them (nobody listens before the server starts), and the live effects come from the
open maintenances being read when the station and vehicle actors start, as after any restart.

Shapes are ``[[longitude, latitude], ...]`` polygons (GeoJSON order).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from .devices.credentials import hash_device_secret, new_device_secret
from .maintenance import store as maintenance_store

CENTER = (48.5734, 7.7521)  # latitude, longitude
CURRENCY = "EUR"
SPOTS_PER_STATION = 8  # the simulator's default
DOCKED_PER_STATION = 4  # spots 1..4 hold a vehicle: the simulator's default (half the spots)
FREE_FLOATING_PER_UNIT = 60
FREE_FLOATING_BASE_ID = 10_000_000  # docked vehicles are station_id * 100 + spot, far below
MODULE_VEHICLES_PER_UNIT = 6  # free-floating vehicles with an IoT module, each in a parking of its unit
MODULE_VEHICLE_BASE_ID = 9_000_000  # below the plain free-floating ones, far above the docked ones
MODULE_PATH_STOPS = 3  # clusters a module vehicle rides through before coming back to its parking
MAX_SCALE = 100

Shape = list[list[float]]

# Around the city, from Hautepierre to the Rhine and from the Robertsau to the Neuhof.
NETWORK_SHAPE: Shape = [
    [7.6900, 48.5850], [7.7000, 48.6050], [7.7350, 48.6120], [7.7700, 48.6180], [7.8000, 48.6250],
    [7.8200, 48.6050], [7.8050, 48.5750], [7.8000, 48.5450], [7.7750, 48.5250], [7.7400, 48.5300],
    [7.7150, 48.5500], [7.6950, 48.5650],
]

NETWORK_RULES = {
    "max_simultaneous_rented_vehicle": 2, "allow_trip_on_hold": True, "trip_too_long": 7200,
    "trip_auto_pause": 3600, "trip_max_pause": 86400, "trip_auto_lock": 604800,
    # No guarantee while payments do not exist: a network asking for one refuses every rent (402/33).
    "min_guarantee": 0, "max_guarantee": 150,
    # The tariff, in CURRENCY: a 20-minute ride costs 1.00 + 20 x 0.25 = 6.00 EUR.
    "unlock_fee": Decimal("1.00"), "price_per_minute": Decimal("0.25"),
}

# (name, manufacturer, type, average max range in km), and which of ten vehicles gets it.
VEHICLE_MODELS: list[tuple[str, str, str, int]] = [
    ("Max G30", "Segway-Ninebot", "kick-scooter", 65),
    ("ES400", "Okai", "kick-scooter", 50),
    ("KQi3 Pro", "NIU", "kick-scooter", 50),
    ("City E-Bike", "Knot", "e-bike", 80),
]
MODEL_BY_LAST_DIGIT = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3]


@dataclass(frozen=True)
class Place:
    name: str
    latitude: float
    longitude: float
    stations: int
    texts: tuple[str, str, str]  # en, fr, de
    parking: bool = False


PLACES: tuple[Place, ...] = (
    Place("Place Kléber", 48.58336, 7.74583, 3, (
        "In front of the Aubette, north side of the square.",
        "Devant l'Aubette, côté nord de la place.",
        "Vor der Aubette, an der Nordseite des Platzes.")),
    Place("Gare Centrale", 48.58485, 7.73453, 3, (
        "Station forecourt, next to the tram stop.",
        "Parvis de la gare, à côté de l'arrêt de tram.",
        "Bahnhofsvorplatz, neben der Straßenbahnhaltestelle."), parking=True),
    Place("Homme de Fer", 48.58355, 7.74384, 2, (
        "Under the glass ring of the tram hub.",
        "Sous l'anneau de verre du pôle tram.",
        "Unter dem Glasring des Straßenbahnknotens.")),
    Place("Cathédrale", 48.58187, 7.75050, 2, (
        "Rue Mercière, facing the cathedral's west front.",
        "Rue Mercière, face à la façade de la cathédrale.",
        "Rue Mercière, gegenüber der Westfassade des Münsters.")),
    Place("Université", 48.58426, 7.76235, 2, (
        "In front of the Palais Universitaire.",
        "Devant le Palais Universitaire.",
        "Vor dem Palais Universitaire.")),
    Place("Esplanade", 48.57925, 7.76825, 2, (
        "Campus entrance, near the tram stop.",
        "Entrée du campus, près de l'arrêt de tram.",
        "Campuseingang, nahe der Straßenbahnhaltestelle."), parking=True),
    Place("Parlement européen", 48.59750, 7.77040, 2, (
        "Allée du Printemps, by the Louise Weiss building.",
        "Allée du Printemps, près du bâtiment Louise Weiss.",
        "Allée du Printemps, beim Louise-Weiss-Gebäude."), parking=True),
    Place("Neudorf", 48.57010, 7.75745, 2, (
        "Place du Marché, next to the market hall.",
        "Place du Marché, à côté de la halle.",
        "Place du Marché, neben der Markthalle."), parking=True),
    Place("Krutenau", 48.57920, 7.75830, 2, (
        "Place de Zurich, along the quay.",
        "Place de Zurich, le long du quai.",
        "Place de Zurich, am Kai entlang."), parking=True),
    Place("Orangerie", 48.59130, 7.77560, 2, (
        "Main gate of the Orangerie park.",
        "Entrée principale du parc de l'Orangerie.",
        "Haupteingang des Orangerie-Parks."), parking=True),
    Place("Place de la République", 48.58730, 7.75330, 2, (
        "Facing the Palais du Rhin.",
        "Face au Palais du Rhin.",
        "Gegenüber dem Rheinpalast.")),
    Place("Petite France", 48.58030, 7.74110, 2, (
        "Near the covered bridges.",
        "Près des Ponts couverts.",
        "Nahe den Gedeckten Brücken.")),
    Place("Place Broglie", 48.58480, 7.75020, 2, (
        "Opposite the Opera house.",
        "En face de l'Opéra.",
        "Gegenüber der Oper.")),
    Place("Les Halles", 48.58610, 7.74080, 2, (
        "Shopping centre, Place des Halles side.",
        "Centre commercial, côté place des Halles.",
        "Einkaufszentrum, Seite Place des Halles.")),
    Place("Place Gutenberg", 48.58080, 7.74800, 1, (
        "Beside the statue of Gutenberg.",
        "À côté de la statue de Gutenberg.",
        "Neben der Gutenberg-Statue.")),
    Place("Place de l'Étoile", 48.57420, 7.75140, 2, (
        "In front of the city hall (Centre administratif).",
        "Devant le Centre administratif.",
        "Vor dem Verwaltungszentrum der Stadt.")),
    Place("Conseil de l'Europe", 48.58820, 7.77420, 1, (
        "Avenue de l'Europe, by the Palais de l'Europe.",
        "Avenue de l'Europe, près du Palais de l'Europe.",
        "Avenue de l'Europe, beim Europapalast.")),
    Place("Robertsau", 48.60150, 7.78420, 2, (
        "Place du Corbeau, village centre.",
        "Place du Corbeau, au cœur du village.",
        "Place du Corbeau, im Ortskern.")),
    Place("Wacken", 48.59750, 7.75780, 2, (
        "Between the congress centre and the exhibition park.",
        "Entre le palais des congrès et le parc des expositions.",
        "Zwischen Kongresszentrum und Messegelände."), parking=True),
    Place("Contades", 48.59020, 7.75580, 1, (
        "South entrance of the Contades park.",
        "Entrée sud du parc des Contades.",
        "Südeingang des Contades-Parks.")),
    Place("Cronenbourg", 48.59560, 7.72560, 2, (
        "Rotonde tram stop.",
        "Arrêt de tram Rotonde.",
        "Straßenbahnhaltestelle Rotonde.")),
    Place("Hautepierre", 48.59280, 7.70650, 2, (
        "Main entrance of the Hautepierre hospital.",
        "Entrée principale de l'hôpital de Hautepierre.",
        "Haupteingang des Krankenhauses Hautepierre.")),
    Place("Koenigshoffen", 48.57930, 7.71820, 2, (
        "Route des Romains, near the church.",
        "Route des Romains, près de l'église.",
        "Route des Romains, nahe der Kirche."), parking=True),
    Place("Montagne Verte", 48.57120, 7.72310, 1, (
        "Tram stop Montagne Verte.",
        "Arrêt de tram Montagne Verte.",
        "Straßenbahnhaltestelle Montagne Verte.")),
    Place("Elsau", 48.56720, 7.72590, 1, (
        "Next to the Elsau swimming pool.",
        "À côté de la piscine de l'Elsau.",
        "Neben dem Schwimmbad Elsau.")),
    Place("Meinau", 48.56000, 7.75420, 2, (
        "By the Meinau stadium.",
        "Près du stade de la Meinau.",
        "Beim Meinau-Stadion.")),
    Place("Neuhof", 48.54990, 7.77070, 2, (
        "Place de Hautefort, by the tram terminus.",
        "Place de Hautefort, près du terminus du tram.",
        "Place de Hautefort, an der Endhaltestelle.")),
    Place("Port du Rhin", 48.56750, 7.79380, 2, (
        "Jardin des Deux Rives, facing Kehl across the Rhine.",
        "Jardin des Deux Rives, face à Kehl de l'autre côté du Rhin.",
        "Garten der zwei Ufer, gegenüber von Kehl am Rhein.")),
    Place("Musée d'Art Moderne", 48.57950, 7.73620, 1, (
        "On the museum's square, by the Ill.",
        "Sur le parvis du musée, au bord de l'Ill.",
        "Auf dem Museumsvorplatz, an der Ill.")),
    Place("Hôpital Civil", 48.57660, 7.74650, 2, (
        "Main gate of the Hôpital Civil.",
        "Porte principale de l'Hôpital Civil.",
        "Haupttor des Hôpital Civil.")),
    Place("Place d'Austerlitz", 48.57770, 7.75150, 1, (
        "Corner of Rue d'Austerlitz.",
        "À l'angle de la rue d'Austerlitz.",
        "An der Ecke der Rue d'Austerlitz.")),
    Place("Citadelle", 48.57490, 7.77940, 1, (
        "Entrance of the Citadelle park.",
        "Entrée du parc de la Citadelle.",
        "Eingang des Zitadellenparks.")),
    Place("Laiterie", 48.57760, 7.73130, 1, (
        "Laiterie tram stop, by the concert hall.",
        "Arrêt de tram Laiterie, près de la salle de concert.",
        "Straßenbahnhaltestelle Laiterie, bei der Konzerthalle.")),
    Place("Place de Bordeaux", 48.59300, 7.76330, 1, (
        "In front of the ARTE building.",
        "Devant le bâtiment d'ARTE.",
        "Vor dem ARTE-Gebäude.")),
    Place("Baggersee", 48.54380, 7.73960, 1, (
        "By the lake, near the tram terminus.",
        "Au bord du lac, près du terminus du tram.",
        "Am See, nahe der Endhaltestelle.")),
)

# Soon to open, and out of order during the Christmas market.
SOON = "Baggersee"
CHRISTMAS_MARKET = "Place Broglie"

QUARTERS: tuple[tuple[str, float, float], ...] = (
    ("Centre", 48.5830, 7.7470), ("Gare", 48.5850, 7.7320), ("Krutenau", 48.5790, 7.7590),
    ("Esplanade", 48.5790, 7.7680), ("Neudorf", 48.5680, 7.7600), ("Meinau", 48.5560, 7.7500),
    ("Neuhof", 48.5450, 7.7720), ("Port du Rhin", 48.5700, 7.7950), ("Robertsau", 48.6030, 7.7850),
    ("Orangerie", 48.5900, 7.7730), ("Wacken", 48.5970, 7.7580), ("Contades", 48.5900, 7.7550),
    ("Cronenbourg", 48.5960, 7.7250), ("Hautepierre", 48.5930, 7.7030), ("Koenigshoffen", 48.5800, 7.7170),
    ("Montagne Verte", 48.5700, 7.7230), ("Elsau", 48.5660, 7.7270), ("Plaine des Bouchers", 48.5620, 7.7380),
    ("Conseil des XV", 48.5880, 7.7680), ("Bourse", 48.5760, 7.7560), ("Musau", 48.5600, 7.7700),
    ("Ganzau", 48.5400, 7.7650),
)


def _box(lng_min: float, lat_min: float, lng_max: float, lat_max: float) -> Shape:
    return [[lng_min, lat_min], [lng_max, lat_min], [lng_max, lat_max], [lng_min, lat_max]]


# (shape, max speed in km/h)
SPEED_ZONES: tuple[tuple[Shape, int], ...] = (
    # The Grande Île: the pedestrian historic centre inside the Ill.
    ([[7.7365, 48.5800], [7.7400, 48.5835], [7.7440, 48.5862], [7.7500, 48.5868], [7.7545, 48.5850],
      [7.7560, 48.5825], [7.7540, 48.5795], [7.7490, 48.5785], [7.7420, 48.5782], [7.7380, 48.5790]], 10),
    (_box(7.7710, 48.5890, 7.7800, 48.5945), 10),  # Orangerie park
    (_box(7.7610, 48.5770, 7.7720, 48.5855), 15),  # Esplanade campus
    (_box(7.7660, 48.5940, 7.7760, 48.6010), 20),  # European quarter
)

APP_LABELS: tuple[tuple[str, str, str, str], ...] = (
    ("ruban", "Ruban Strasbourg", "https://play.google.com/store/apps/details?id=eu.ruban.strasbourg",
     "https://apps.apple.com/app/ruban-strasbourg/id1598172041"),
)


# geometry --------------------------------------------------------------------------


def contains(shape: Shape, latitude: float, longitude: float) -> bool:
    """Whether a point is inside a ``[[lng, lat], ...]`` polygon (ray casting)."""
    inside = False
    count = len(shape)
    for index in range(count):
        x1, y1 = shape[index][0], shape[index][1]
        x2, y2 = shape[(index + 1) % count][0], shape[(index + 1) % count][1]
        if (y1 > latitude) != (y2 > latitude):
            crossing = x1 + (latitude - y1) * (x2 - x1) / (y2 - y1)
            if longitude < crossing:
                inside = not inside
    return inside


def _nearest_quarter(latitude: float, longitude: float) -> str:
    scale = math.cos(math.radians(latitude))
    return min(QUARTERS, key=lambda q: (q[1] - latitude) ** 2 + ((q[2] - longitude) * scale) ** 2)[0]


def _parking_near(latitude: float, longitude: float) -> Shape:
    """About 30 x 40 metres, just north of the cluster."""
    south = latitude + 0.0002
    return _box(round(longitude - 0.00025, 6), round(south, 6), round(longitude + 0.00025, 6),
                round(south + 0.00035, 6))


# the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterPlan:
    name: str
    latitude: float
    longitude: float
    stations: int
    description: dict[str, str]
    commissioning_date: datetime | None
    soon_to_be_available: bool
    has_badge_reader: bool
    balancing_type: str
    parking: bool


@dataclass(frozen=True)
class FreeVehiclePlan:
    vehicle_id: int
    latitude: float
    longitude: float


BALANCING = ("neutral", "donor", "neutral", "receiver")
FIRST_OPENING = datetime(2023, 3, 1, 9, 0, tzinfo=UTC)


def _base_clusters() -> list[ClusterPlan]:
    found = []
    for index, place in enumerate(PLACES):
        soon = place.name == SOON
        found.append(ClusterPlan(
            name=place.name, latitude=place.latitude, longitude=place.longitude, stations=place.stations,
            description=dict(zip(("en", "fr", "de"), place.texts, strict=True)),
            commissioning_date=datetime(2027, 4, 1, 9, 0, tzinfo=UTC) if soon
            else FIRST_OPENING + timedelta(weeks=index),
            soon_to_be_available=soon, has_badge_reader=index % 3 == 0, balancing_type=BALANCING[index % 4],
            parking=place.parking,
        ))
    return found


def _random_point(rng: random.Random) -> tuple[float, float]:
    south, north = min(p[1] for p in NETWORK_SHAPE), max(p[1] for p in NETWORK_SHAPE)
    west, east = min(p[0] for p in NETWORK_SHAPE), max(p[0] for p in NETWORK_SHAPE)
    while True:
        lat, lng = rng.uniform(south, north), rng.uniform(west, east)
        if contains(NETWORK_SHAPE, lat, lng):
            return round(lat, 6), round(lng, 6)


def _unit_clusters(unit: int) -> list[ClusterPlan]:
    """Unit 2, 3, ...: as many clusters and stations as the base city, at generated places in the network."""
    rng = random.Random(f"knot-demo-unit-{unit}")
    found = []
    for index, place in enumerate(PLACES, start=1):
        lat, lng = _random_point(rng)
        quarter = _nearest_quarter(lat, lng)
        found.append(ClusterPlan(
            name=f"{quarter} {unit}-{index:02d}", latitude=lat, longitude=lng, stations=place.stations,
            description={"en": f"Docking station in {quarter}.", "fr": f"Station du quartier {quarter}.",
                         "de": f"Station im Viertel {quarter}."},
            commissioning_date=FIRST_OPENING + timedelta(days=7 * unit + index), soon_to_be_available=False,
            has_badge_reader=index % 3 == 0, balancing_type=BALANCING[index % 4], parking=index % 5 == 0,
        ))
    return found


def _free_vehicles(unit: int, clusters: list[ClusterPlan]) -> list[FreeVehiclePlan]:
    """Vehicles left on the street near the unit's clusters, inside the network."""
    rng = random.Random(f"knot-demo-free-{unit}")
    found = []
    for index in range(FREE_FLOATING_PER_UNIT):
        near = clusters[index % len(clusters)]
        while True:
            lat = round(near.latitude + rng.uniform(-0.003, 0.003), 6)
            lng = round(near.longitude + rng.uniform(-0.004, 0.004), 6)
            if contains(NETWORK_SHAPE, lat, lng):
                break
        found.append(FreeVehiclePlan(FREE_FLOATING_BASE_ID + (unit - 1) * 1000 + index, lat, lng))
    return found


@dataclass(frozen=True)
class ModuleVehiclePlan:
    """A free-floating vehicle with an IoT module: where it stands (a parking) and the loop it rides."""

    vehicle_id: int
    serial: str
    latitude: float
    longitude: float
    path: tuple[tuple[float, float], ...]  # (latitude, longitude) points


def _parking_centre(cluster: ClusterPlan) -> tuple[float, float]:
    shape = _parking_near(cluster.latitude, cluster.longitude)
    return (round((shape[0][1] + shape[2][1]) / 2, 6), round((shape[0][0] + shape[2][0]) / 2, 6))


def _module_vehicles(unit: int, clusters: list[ClusterPlan]) -> list[ModuleVehiclePlan]:
    """One vehicle in each of the unit's first parkings; its path: the next clusters of the unit, in order."""
    found = []
    parkings = [index for index, cluster in enumerate(clusters) if cluster.parking][:MODULE_VEHICLES_PER_UNIT]
    for number, index in enumerate(parkings, start=1):
        vehicle_id = MODULE_VEHICLE_BASE_ID + (unit - 1) * 100 + number
        stops = [clusters[(index + step) % len(clusters)] for step in range(1, MODULE_PATH_STOPS + 1)]
        lat, lng = _parking_centre(clusters[index])
        found.append(ModuleVehiclePlan(vehicle_id, f"KNOT-FF-{vehicle_id}", lat, lng,
                                       tuple((c.latitude, c.longitude) for c in stops)))
    return found


@dataclass(frozen=True)
class CityPlan:
    clusters: list[ClusterPlan]
    free_vehicles: list[FreeVehiclePlan]
    module_vehicles: list[ModuleVehiclePlan]


def city_plan(scale: int = 1) -> CityPlan:
    """The whole city at ``scale`` (deterministic: the plan of scale N starts with the plan of scale N - 1)."""
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"the scale is 1 to {MAX_SCALE}, not {scale}")
    clusters: list[ClusterPlan] = []
    free: list[FreeVehiclePlan] = []
    modules: list[ModuleVehiclePlan] = []
    for unit in range(1, scale + 1):
        unit_clusters = _base_clusters() if unit == 1 else _unit_clusters(unit)
        clusters += unit_clusters
        free += _free_vehicles(unit, unit_clusters)
        modules += _module_vehicles(unit, unit_clusters)
    return CityPlan(clusters, free, modules)


# loading -----------------------------------------------------------------------------


def _battery(vehicle_id: int) -> int:
    return 25 + (vehicle_id * 37) % 76


async def _ensure_models(conn: asyncpg.Connection) -> list[tuple[int, int]]:
    """(model id, average max range) of each model of ``VEHICLE_MODELS``."""
    found = []
    for name, manufacturer, vehicle_type, avg_range in VEHICLE_MODELS:
        model_id = await conn.fetchval(
            "SELECT id FROM vehicle_models WHERE name = $1 AND manufacturer = $2", name, manufacturer
        )
        if model_id is None:
            model_id = await conn.fetchval(
                "INSERT INTO vehicle_models (name, manufacturer, vehicle_type) VALUES ($1, $2, $3) RETURNING id",
                name, manufacturer, vehicle_type,
            )
        found.append((model_id, avg_range))
    return found


async def ensure_app_labels(conn: asyncpg.Connection, organization: int, network: int) -> None:
    """The demo's other white labels, showing the Strasbourg network too."""
    for name, label_name, android, ios in APP_LABELS:
        label = await conn.fetchval(
            """INSERT INTO app_labels (name, label_name, organization_id, android_store_url, ios_store_url)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (name) DO UPDATE SET label_name = EXCLUDED.label_name,
                   android_store_url = EXCLUDED.android_store_url, ios_store_url = EXCLUDED.ios_store_url
               RETURNING id""",
            name, label_name, organization, android, ios,
        )
        await conn.execute("INSERT INTO network_app_labels VALUES ($1, $2) ON CONFLICT DO NOTHING", network, label)


async def _shape_network(conn: asyncpg.Connection, network: int) -> None:
    await conn.execute(
        """UPDATE networks SET shape = $2, center_latitude = $3, center_longitude = $4, currency = $5,
               max_simultaneous_rented_vehicle = $6, allow_trip_on_hold = $7, trip_too_long = $8,
               trip_auto_pause = $9, trip_max_pause = $10, trip_auto_lock = $11, min_guarantee = $12,
               max_guarantee = $13, unlock_fee = $14, price_per_minute = $15
           WHERE id = $1""",
        network, NETWORK_SHAPE, CENTER[0], CENTER[1], CURRENCY, *NETWORK_RULES.values(),
    )


async def _insert_clusters(conn: asyncpg.Connection, network: int, plans: list[ClusterPlan]) -> dict[str, int]:
    rows = await conn.fetch(
        """INSERT INTO clusters (network_id, name, latitude, longitude, description, commissioning_date,
                                 soon_to_be_available, has_badge_reader, balancing_type)
           SELECT $1, t.name, t.lat, t.lng, t.description::jsonb, t.opening, t.soon, t.badge, t.balancing
           FROM unnest($2::text[], $3::float8[], $4::float8[], $5::text[], $6::timestamptz[], $7::bool[],
                       $8::bool[], $9::text[])
                AS t(name, lat, lng, description, opening, soon, badge, balancing)
           RETURNING id, name""",
        network, [p.name for p in plans], [p.latitude for p in plans], [p.longitude for p in plans],
        [json.dumps(p.description, ensure_ascii=False) for p in plans], [p.commissioning_date for p in plans],
        [p.soon_to_be_available for p in plans], [p.has_badge_reader for p in plans],
        [p.balancing_type for p in plans],
    )
    return {r["name"]: r["id"] for r in rows}


async def _insert_stations(conn: asyncpg.Connection, plans: list[ClusterPlan], ids: dict[str, int]) -> list[int]:
    """Stations and spots of the new clusters, spots 1..4 holding a vehicle id; the new station ids.

    Secrets are random and only their hashes are kept: ``issue_station_secrets`` gives new ones on demand.
    """
    clusters = [ids[p.name] for p in plans for _ in range(p.stations)]
    rows = await conn.fetch(
        """INSERT INTO stations (cluster_id, secret_hash, spot_count)
           SELECT t.cluster_id, t.secret_hash, $3 FROM unnest($1::bigint[], $2::text[]) AS t(cluster_id, secret_hash)
           RETURNING id, cluster_id""",
        clusters, [hash_device_secret(new_device_secret()) for _ in clusters], SPOTS_PER_STATION,
    )
    by_cluster: dict[int, list[int]] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        by_cluster.setdefault(row["cluster_id"], []).append(row["id"])
    stations: list[int] = []
    ranks: list[int] = []  # the second station of a cluster shows its spots to riders as 9..16
    for members in by_cluster.values():
        stations += members
        ranks += range(len(members))
    await conn.execute(
        """INSERT INTO spots (station_id, number, displayed_number, vehicle_id, lock_status)
           SELECT t.station_id, n, t.rank * $2 + n,
                  CASE WHEN n <= $3 THEN t.station_id * 100 + n END, CASE WHEN n <= $3 THEN 1 ELSE 0 END
           FROM unnest($1::bigint[], $4::int[]) AS t(station_id, rank), generate_series(1, $2) AS n""",
        stations, SPOTS_PER_STATION, DOCKED_PER_STATION, ranks,
    )
    return stations


_INSERT_VEHICLES = """
INSERT INTO vehicles (id, serial_number, model_id, network_id, avg_max_range, battery_level, online, state,
                      spot_id, latitude, longitude, has_freefloat_to_station_reward)
SELECT t.id, 'SXB' || lpad(t.id::text, 8, '0'), t.model_id, $1, t.avg_range, t.battery, false, 'available',
       t.spot_id, t.lat, t.lng, t.reward
FROM unnest($2::bigint[], $3::bigint[], $4::int[], $5::int[], $6::bigint[], $7::float8[], $8::float8[], $9::bool[])
     AS t(id, model_id, avg_range, battery, spot_id, lat, lng, reward)
"""


async def _insert_vehicles(
    conn: asyncpg.Connection, network: int, models: list[tuple[int, int]],
    vehicles: list[tuple[int, int | None, float | None, float | None]], conflict: str,
) -> None:
    """Vehicles given as (id, spot id, latitude, longitude)."""
    chosen = [models[MODEL_BY_LAST_DIGIT[v[0] % 10]] for v in vehicles]
    await conn.execute(
        _INSERT_VEHICLES + conflict,
        network, [v[0] for v in vehicles], [m[0] for m in chosen], [m[1] for m in chosen],
        [_battery(v[0]) for v in vehicles], [v[1] for v in vehicles], [v[2] for v in vehicles],
        [v[3] for v in vehicles], [v[1] is None and v[0] % 4 == 0 for v in vehicles],
    )


async def _insert_docked_vehicles(
    conn: asyncpg.Connection, network: int, stations: list[int], models: list[tuple[int, int]]
) -> None:
    """The vehicles the new spots hold; a vehicle of that id already known is moved into its spot."""
    spots = await conn.fetch(
        "SELECT id, vehicle_id FROM spots WHERE station_id = ANY($1::bigint[]) AND vehicle_id IS NOT NULL ORDER BY id",
        stations,
    )
    await _insert_vehicles(
        conn, network, models, [(s["vehicle_id"], s["id"], None, None) for s in spots],
        "ON CONFLICT (id) DO UPDATE SET spot_id = EXCLUDED.spot_id, latitude = NULL, longitude = NULL",
    )


async def _insert_free_vehicles(
    conn: asyncpg.Connection, network: int, plans: list[FreeVehiclePlan], models: list[tuple[int, int]]
) -> None:
    """Free-floating vehicles not there yet (one that is there stays where it went since)."""
    await _insert_vehicles(
        conn, network, models, [(p.vehicle_id, None, p.latitude, p.longitude) for p in plans],
        "ON CONFLICT DO NOTHING",
    )


async def _insert_module_vehicles(
    conn: asyncpg.Connection, network: int, plans: list[ModuleVehiclePlan], models: list[tuple[int, int]]
) -> None:
    """Module vehicles not there yet, locked, with a secret nobody knows until :func:`issue_vehicle_secrets`."""
    chosen = [models[MODEL_BY_LAST_DIGIT[p.vehicle_id % 10]] for p in plans]
    await conn.execute(
        """INSERT INTO vehicles (id, serial_number, model_id, network_id, avg_max_range, battery_level, online,
                                 state, latitude, longitude, free_floating, secret_hash, locked)
           SELECT t.id, t.serial, t.model_id, $1, t.avg_range, t.battery, false, 'available', t.lat, t.lng,
                  true, t.secret_hash, true
           FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::int[], $6::int[], $7::float8[], $8::float8[],
                       $9::text[]) AS t(id, serial, model_id, avg_range, battery, lat, lng, secret_hash)
           ON CONFLICT DO NOTHING""",
        network, [p.vehicle_id for p in plans], [p.serial for p in plans], [m[0] for m in chosen],
        [m[1] for m in chosen], [_battery(p.vehicle_id) for p in plans], [p.latitude for p in plans],
        [p.longitude for p in plans], [hash_device_secret(new_device_secret()) for _ in plans],
    )


async def _insert_parkings(
    conn: asyncpg.Connection, network: int, plans: list[ClusterPlan], ids: dict[str, int]
) -> None:
    with_parking = [p for p in plans if p.parking]
    await conn.execute(
        """INSERT INTO virtual_parkings (network_id, cluster_id, shape)
           SELECT $1, t.cluster_id, t.shape::jsonb FROM unnest($2::bigint[], $3::text[]) AS t(cluster_id, shape)""",
        network, [ids[p.name] for p in with_parking],
        [json.dumps(_parking_near(p.latitude, p.longitude)) for p in with_parking],
    )


async def _close_for_christmas(conn: asyncpg.Connection, cluster: int) -> None:
    closure = await conn.fetchval(
        """INSERT INTO exceptional_out_of_orders (type, reason, custom_reason)
           VALUES ('event', 'Christmas market', 'Christkindelsmärik: the square is closed to vehicles in December.')
           RETURNING id"""
    )
    await conn.execute("UPDATE clusters SET exceptional_out_of_order_id = $2 WHERE id = $1", cluster, closure)


async def _ensure_speed_zones(conn: asyncpg.Connection, network: int) -> None:
    for shape, max_speed in SPEED_ZONES:
        await conn.execute(
            """INSERT INTO speed_zones (network_id, shape, max_speed) SELECT $1, $2, $3
               WHERE NOT EXISTS (SELECT 1 FROM speed_zones WHERE network_id = $1 AND shape = $2)""",
            network, shape, max_speed,
        )


async def city_counts(conn: asyncpg.Connection, network: int) -> dict[str, int]:
    """What the network holds: clusters, stations, spots, vehicles (docked, free-floating, of which with a
    module), parkings, zones."""
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM clusters WHERE network_id = $1) AS clusters,
             (SELECT count(*) FROM stations s JOIN clusters c ON c.id = s.cluster_id
              WHERE c.network_id = $1) AS stations,
             (SELECT count(*) FROM spots p JOIN stations s ON s.id = p.station_id
              JOIN clusters c ON c.id = s.cluster_id WHERE c.network_id = $1) AS spots,
             (SELECT count(*) FROM vehicles WHERE network_id = $1) AS vehicles,
             (SELECT count(*) FROM vehicles WHERE network_id = $1 AND spot_id IS NOT NULL) AS docked_vehicles,
             (SELECT count(*) FROM vehicles WHERE network_id = $1 AND spot_id IS NULL
                AND latitude IS NOT NULL) AS free_floating_vehicles,
             (SELECT count(*) FROM vehicles WHERE network_id = $1 AND free_floating) AS module_vehicles,
             (SELECT count(*) FROM virtual_parkings WHERE network_id = $1) AS parkings,
             (SELECT count(*) FROM speed_zones WHERE network_id = $1) AS speed_zones""",
        network,
    )
    return dict(row)


async def ensure_city(conn: asyncpg.Connection, network: int, scale: int = 1) -> dict[str, int]:
    """Give the network its shape and rules, and add what ``city_plan(scale)`` has that it lacks (in a transaction)."""
    plan = city_plan(scale)
    await _shape_network(conn, network)
    models = await _ensure_models(conn)
    existing = {r["name"] for r in await conn.fetch("SELECT name FROM clusters WHERE network_id = $1", network)}
    new = [p for p in plan.clusters if p.name not in existing]
    if new:
        ids = await _insert_clusters(conn, network, new)
        stations = await _insert_stations(conn, new, ids)
        await _insert_docked_vehicles(conn, network, stations, models)
        await _insert_parkings(conn, network, new, ids)
        if CHRISTMAS_MARKET in ids:
            await _close_for_christmas(conn, ids[CHRISTMAS_MARKET])
    await _insert_free_vehicles(conn, network, plan.free_vehicles, models)
    await _insert_module_vehicles(conn, network, plan.module_vehicles, models)
    await _ensure_speed_zones(conn, network)
    return await city_counts(conn, network)


async def issue_station_secrets(conn: asyncpg.Connection, network: int) -> list[tuple[int, str]]:
    """New secrets for every station of the network (the old ones stop working): (station id, secret)."""
    rows = await conn.fetch(
        "SELECT s.id FROM stations s JOIN clusters c ON c.id = s.cluster_id WHERE c.network_id = $1 ORDER BY s.id",
        network,
    )
    issued = [(r["id"], new_device_secret()) for r in rows]
    await conn.execute(
        """UPDATE stations s SET secret_hash = t.secret_hash
           FROM unnest($1::bigint[], $2::text[]) AS t(id, secret_hash) WHERE s.id = t.id""",
        [station for station, _ in issued], [hash_device_secret(secret) for _, secret in issued],
    )
    return issued



@dataclass(frozen=True)
class IssuedVehicle:
    """A module vehicle's new secret, where it stands and the path it rides (empty: not one of the plan's)."""

    vehicle_id: int
    serial: str
    secret: str
    latitude: float
    longitude: float
    path: tuple[tuple[float, float], ...]


def _units_of(vehicle_ids: list[int]) -> int:
    """The scale whose plan holds these module vehicles (ids outside the plan count for nothing)."""
    units = [(v - MODULE_VEHICLE_BASE_ID - 1) // 100 + 1 for v in vehicle_ids if v > MODULE_VEHICLE_BASE_ID]
    return min(MAX_SCALE, max([1, *units]))


async def issue_vehicle_secrets(conn: asyncpg.Connection, network: int) -> list[IssuedVehicle]:
    """New secrets for every module vehicle of the network (the old ones stop working), with where each
    stands now (its last known position, else its plan's) and its plan's path."""
    rows = await conn.fetch(
        """SELECT id, serial_number, latitude, longitude FROM vehicles WHERE network_id = $1 AND free_floating
           ORDER BY id""",
        network,
    )
    paths = {p.vehicle_id: p for p in city_plan(_units_of([r["id"] for r in rows])).module_vehicles}
    issued = []
    for row in rows:
        plan = paths.get(row["id"])
        lat = row["latitude"] if row["latitude"] is not None else plan.latitude if plan else CENTER[0]
        lng = row["longitude"] if row["longitude"] is not None else plan.longitude if plan else CENTER[1]
        issued.append(IssuedVehicle(row["id"], row["serial_number"], new_device_secret(), lat, lng,
                                    plan.path if plan else ()))
    await conn.execute(
        """UPDATE vehicles v SET secret_hash = t.secret_hash
           FROM unnest($1::bigint[], $2::text[]) AS t(id, secret_hash) WHERE v.id = t.id""",
        [v.vehicle_id for v in issued], [hash_device_secret(v.secret) for v in issued],
    )
    return issued


@dataclass(frozen=True)
class DemoMaintenance:
    """An open maintenance of the demo city, on the ``station``-th station (by id) of cluster ``cluster``: the
    station itself, its spot ``spot``, or the vehicle docked in that spot (``target``)."""

    target: maintenance_store.TargetType
    cluster: str
    station: int
    spot: int | None
    type_key: str
    severity: maintenance_store.Severity
    comment: str
    hours_ago: int
    automatic_code: str | None = None  # set: opened by the station, not by the operator
    report: bool = False  # linked to the demo rider's report about the brakes


DEMO_MAINTENANCES: tuple[DemoMaintenance, ...] = (
    DemoMaintenance("spot", "Gare Centrale", 0, 2, "lock-stuck", "high",
                    "The lock does not release the scooter; technician on the way.", 3),
    DemoMaintenance("vehicle", "Place Kléber", 0, 1, "brake", "low",
                    "A rider finds the front brake weak: adjust it at the next round.", 20, report=True),
    DemoMaintenance("station", "Homme de Fer", 1, None, "power-supply", "low",
                    "The station reported an abnormal low voltage on its supply.", 6,
                    automatic_code="abnormal-low-voltage"),
)


async def _demo_target(conn: asyncpg.Connection, network: int, plan: DemoMaintenance,
                       ) -> maintenance_store.Target | None:
    station = await conn.fetchval(
        """SELECT s.id FROM stations s JOIN clusters c ON c.id = s.cluster_id
           WHERE c.network_id = $1 AND c.name = $2 ORDER BY s.id OFFSET $3 LIMIT 1""",
        network, plan.cluster, plan.station,
    )
    if station is None:
        return None
    if plan.target == "station":
        return await maintenance_store.station_target(conn, station)
    assert plan.spot is not None
    spot = await maintenance_store.spot_target_by_number(conn, station, plan.spot)
    if plan.target == "spot" or spot is None:
        return spot
    vehicle = await conn.fetchval("SELECT vehicle_id FROM spots WHERE id = $1", spot.spot_id)
    return None if vehicle is None else await maintenance_store.vehicle_target(conn, vehicle)


async def ensure_maintenances(conn: asyncpg.Connection, network: int, *, operator: int | None,
                              report: int | None) -> int:
    """Open the ``DEMO_MAINTENANCES`` the city lacks; the number of open maintenances of the network.

    Additive like the rest: a target that ever had a maintenance of the demo's type (open, resolved or deleted
    from history) is left alone, so resolving a demo maintenance is not undone by the next ``knot-rt demo``.
    The operator's ones are started by ``operator`` (``started_by_uid``); ``report`` is the rider's report
    the vehicle one links to. Missing pieces (a cluster of the plan renamed away, no scooter in the spot) skip it.
    """
    for plan in DEMO_MAINTENANCES:
        target = await _demo_target(conn, network, plan)
        if target is None or (plan.automatic_code is None and operator is None):
            continue
        own = {"station": target.station_id, "spot": target.spot_id, "vehicle": target.vehicle_id}[target.kind]
        if await conn.fetchval(
            f"""SELECT 1 FROM maintenances WHERE target_type = $1 AND {target.kind}_id = $2 AND type_key = $3
                LIMIT 1""",
            target.kind, own, plan.type_key,
        ):
            continue
        opened = await maintenance_store.insert(
            conn, target, plan.type_key, plan.severity, comment=plan.comment,
            report_id=report if plan.report else None,
            started_by="automatic" if plan.automatic_code else "user",
            started_by_uid=None if plan.automatic_code else operator, automatic_code=plan.automatic_code,
        )
        if opened is not None:
            await conn.execute("UPDATE maintenances SET started_at = now() - make_interval(hours => $2) "
                               "WHERE id = $1", opened.id, plan.hours_ago)
    count: int = await conn.fetchval(
        "SELECT count(*) FROM maintenances WHERE network_id = $1 AND stopped_at IS NULL", network)
    return count
