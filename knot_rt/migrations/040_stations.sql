-- Stations, spots, vehicles, the durable station events and the feed's event log.

CREATE TABLE stations (
    id             bigserial PRIMARY KEY,
    cluster_id     bigint NOT NULL REFERENCES clusters(id),
    secret_hash    text NOT NULL,                  -- argon2id of the station's secret
    mainboard_id   bigint,
    version        text NOT NULL DEFAULT 'v6' CHECK (version IN ('v5', 'v6')),
    spot_count     integer NOT NULL CHECK (spot_count BETWEEN 1 AND 32),
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- last known live facts, written as the station reports (rebuilt into its actor on restart)
    online         boolean NOT NULL DEFAULT false,
    last_seen_at   timestamptz,
    firmware       jsonb,                          -- boot: mainboard and spot firmware
    last_state     jsonb                           -- the last `state` payload
);
CREATE INDEX stations_cluster ON stations (cluster_id);

CREATE TABLE spots (
    id                bigserial PRIMARY KEY,
    station_id        bigint NOT NULL REFERENCES stations(id) ON DELETE CASCADE,
    number            integer NOT NULL CHECK (number BETWEEN 1 AND 32),
    displayed_number  integer NOT NULL,
    in_maintenance    boolean NOT NULL DEFAULT false,
    is_accessible     boolean NOT NULL DEFAULT true,
    vehicle_id        bigint,                      -- the vehicle id the station reads, null when empty
    lock_status       smallint,                    -- 0 open, 1 closed
    UNIQUE (station_id, number)
);

CREATE TABLE vehicle_models (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    manufacturer  text NOT NULL,
    vehicle_type  text NOT NULL DEFAULT 'kick-scooter'
);

CREATE TABLE vehicles (
    id              bigint PRIMARY KEY,            -- the id the stations read from the vehicle
    serial_number   text NOT NULL UNIQUE,
    model_id        bigint REFERENCES vehicle_models(id),
    network_id      bigint REFERENCES networks(id),
    avg_max_range   integer NOT NULL DEFAULT 0,
    battery_level   smallint,
    voltage         integer,
    online          boolean NOT NULL DEFAULT false,
    state           text NOT NULL DEFAULT 'available',
    spot_id         bigint REFERENCES spots(id) ON DELETE SET NULL,
    latitude        double precision,
    longitude       double precision,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicles_spot ON vehicles (spot_id);

-- Every station CALL applied, by its id: a repeated id is answered with the same RESULT
-- and applied once. Kept at least 7 days.
CREATE TABLE station_messages (
    station_id   bigint NOT NULL REFERENCES stations(id) ON DELETE CASCADE,
    message_id   text NOT NULL,
    action       text NOT NULL,
    payload      jsonb NOT NULL,
    result       jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, message_id)
);
CREATE INDEX station_messages_age ON station_messages (received_at);

-- The feed's durable log: per-topic sequence numbers with no gaps.
CREATE TABLE feed_topics (
    topic     text PRIMARY KEY,
    last_seq  bigint NOT NULL DEFAULT 0
);
CREATE TABLE feed_events (
    topic       text NOT NULL,
    seq         bigint NOT NULL,
    event       text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, seq)
);
CREATE INDEX feed_events_age ON feed_events (created_at);

-- Commands sent to stations: the unlock id echoed in the `unlocked` event.
CREATE SEQUENCE station_unlock_ids;
