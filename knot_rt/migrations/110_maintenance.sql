-- Maintenance (issue 13): localized maintenance types per target, the maintenances of stations, spots and
-- vehicles (opened by an operator or automatically from a station's fault, alert or silence), their pictures.

CREATE TABLE maintenance_types (
    key               text PRIMARY KEY CHECK (char_length(key) BETWEEN 1 AND 50),   -- the spec's type_key
    target_type       text NOT NULL CHECK (target_type IN ('station', 'spot', 'vehicle')),
    default_severity  text NOT NULL DEFAULT 'low' CHECK (default_severity IN ('info', 'low', 'high')),
    names             jsonb NOT NULL DEFAULT '{}',     -- {"en": "Flat tyre", "fr": "Pneu crevé"}
    created_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz                      -- a deleted type lists with its deletion_date, opens nothing
);

CREATE TABLE maintenances (
    id                          bigserial PRIMARY KEY,   -- the spec's maintenance_id
    target_type                 text NOT NULL CHECK (target_type IN ('station', 'spot', 'vehicle')),
    -- The target and where it was when opened (a vehicle keeps the spot it was docked into, if any).
    station_id                  bigint REFERENCES stations(id) ON DELETE CASCADE,
    spot_id                     bigint REFERENCES spots(id) ON DELETE CASCADE,
    vehicle_id                  bigint REFERENCES vehicles(id) ON DELETE CASCADE,
    network_id                  bigint NOT NULL REFERENCES networks(id),
    cluster_id                  bigint REFERENCES clusters(id) ON DELETE SET NULL,
    type_key                    text NOT NULL REFERENCES maintenance_types(key),
    severity                    text NOT NULL CHECK (severity IN ('info', 'low', 'high')),
    comment                     text CHECK (char_length(comment) BETWEEN 1 AND 1024),
    report_id                   bigint REFERENCES reports(id) ON DELETE SET NULL,
    started_by                  text NOT NULL CHECK (started_by IN ('user', 'automatic')),
    started_by_uid              bigint REFERENCES users(id) ON DELETE SET NULL,
    automatic_code_description  text,                    -- 'charge-fault', 'locker-stuck', 'offline', ...
    started_at                  timestamptz NOT NULL DEFAULT now(),
    stopped_at                  timestamptz,
    stopped_by                  text CHECK (stopped_by IN ('user', 'automatic')),
    stopped_by_uid              bigint REFERENCES users(id) ON DELETE SET NULL,
    deleted_from_history        boolean NOT NULL DEFAULT false,
    CONSTRAINT maintenances_target CHECK (
        (target_type = 'station' AND station_id IS NOT NULL AND spot_id IS NULL AND vehicle_id IS NULL)
        OR (target_type = 'spot' AND spot_id IS NOT NULL AND station_id IS NOT NULL)
        OR (target_type = 'vehicle' AND vehicle_id IS NOT NULL)
    ),
    CONSTRAINT maintenances_stopped CHECK ((stopped_at IS NULL) = (stopped_by IS NULL)),
    CONSTRAINT maintenances_automatic CHECK (started_by = 'user' OR automatic_code_description IS NOT NULL)
);
CREATE INDEX maintenances_station_open ON maintenances (station_id) WHERE stopped_at IS NULL;
CREATE INDEX maintenances_spot_open ON maintenances (spot_id) WHERE stopped_at IS NULL;
CREATE INDEX maintenances_vehicle_open ON maintenances (vehicle_id) WHERE stopped_at IS NULL;
CREATE INDEX maintenances_station_history ON maintenances (station_id, id) WHERE stopped_at IS NOT NULL;
CREATE INDEX maintenances_spot_history ON maintenances (spot_id, id) WHERE stopped_at IS NOT NULL;
CREATE INDEX maintenances_vehicle_history ON maintenances (vehicle_id, id) WHERE stopped_at IS NOT NULL;
CREATE INDEX maintenances_cluster_open ON maintenances (cluster_id) WHERE stopped_at IS NULL;
-- One open automatic maintenance per target and code: a resent fault or alert never opens a second one.
CREATE UNIQUE INDEX maintenances_automatic_once ON maintenances (
    target_type, coalesce(station_id, 0), coalesce(spot_id, 0), coalesce(vehicle_id, 0), automatic_code_description
) WHERE stopped_at IS NULL AND started_by = 'automatic';

CREATE TABLE maintenance_pictures (
    id              bigserial PRIMARY KEY,
    public_id       text NOT NULL UNIQUE,                -- in the picture's URL
    maintenance_id  bigint NOT NULL REFERENCES maintenances(id) ON DELETE CASCADE,
    content_type    text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    data            bytea NOT NULL,                      -- re-encoded, metadata stripped
    width           integer NOT NULL CHECK (width > 0),
    height          integer NOT NULL CHECK (height > 0),
    uploaded_by     bigint REFERENCES users(id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX maintenance_pictures_maintenance ON maintenance_pictures (maintenance_id);

INSERT INTO maintenance_types (key, target_type, default_severity, names) VALUES
    ('flat-tyre', 'vehicle', 'high', '{"en": "Flat tyre", "fr": "Pneu crevé", "de": "Platter Reifen"}'),
    ('brake', 'vehicle', 'high', '{"en": "Brake problem", "fr": "Problème de frein", "de": "Bremsproblem"}'),
    ('broken-screen', 'vehicle', 'low', '{"en": "Broken screen", "fr": "Écran cassé", "de": "Display defekt"}'),
    ('battery', 'vehicle', 'high', '{"en": "Battery problem", "fr": "Problème de batterie", "de": "Akkuproblem"}'),
    ('cleaning', 'vehicle', 'info', '{"en": "Cleaning", "fr": "Nettoyage", "de": "Reinigung"}'),
    ('relocation', 'vehicle', 'info', '{"en": "Relocation", "fr": "Déplacement", "de": "Umsetzen"}'),
    ('check-vehicle', 'vehicle', 'low', '{"en": "Check vehicle", "fr": "Vérifier le véhicule", "de": "Fahrzeug prüfen"}'),
    ('lock-stuck', 'spot', 'high', '{"en": "Lock stuck", "fr": "Verrou bloqué", "de": "Schloss klemmt"}'),
    ('incorrect-lock', 'spot', 'low', '{"en": "Incorrect lock", "fr": "Verrouillage incorrect", "de": "Falsch verriegelt"}'),
    ('charge-fault', 'spot', 'low', '{"en": "Charge fault", "fr": "Défaut de charge", "de": "Ladefehler"}'),
    ('spot-damaged', 'spot', 'high', '{"en": "Damaged spot", "fr": "Emplacement endommagé", "de": "Stellplatz beschädigt"}'),
    ('spot-cleaning', 'spot', 'info', '{"en": "Spot cleaning", "fr": "Nettoyage de l''emplacement", "de": "Stellplatzreinigung"}'),
    ('station-offline', 'station', 'high', '{"en": "Station offline", "fr": "Station hors ligne", "de": "Station offline"}'),
    ('station-fault', 'station', 'high', '{"en": "Station fault", "fr": "Panne de station", "de": "Stationsfehler"}'),
    ('power-supply', 'station', 'high', '{"en": "Power supply", "fr": "Alimentation", "de": "Stromversorgung"}'),
    ('station-damaged', 'station', 'low', '{"en": "Damaged station", "fr": "Station endommagée", "de": "Station beschädigt"}'),
    ('station-cleaning', 'station', 'info', '{"en": "Station cleaning", "fr": "Nettoyage de la station", "de": "Stationsreinigung"}');
