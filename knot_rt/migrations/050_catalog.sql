-- Catalog and maps: what a rider or an operator sees on a map.

CREATE TABLE exceptional_out_of_orders (
    id             bigserial PRIMARY KEY,
    type           text NOT NULL DEFAULT 'other',   -- weather, event, maintenance, other
    reason         text NOT NULL,
    custom_reason  text
);

ALTER TABLE networks
    ADD COLUMN shape            jsonb NOT NULL DEFAULT '[]',   -- [[lng, lat], ...] polygon
    ADD COLUMN center_latitude  double precision NOT NULL DEFAULT 0,
    ADD COLUMN center_longitude double precision NOT NULL DEFAULT 0,
    ADD COLUMN currency         text NOT NULL DEFAULT 'EUR',
    ADD COLUMN max_simultaneous_rented_vehicle integer NOT NULL DEFAULT 1,
    ADD COLUMN allow_trip_on_hold boolean NOT NULL DEFAULT true,
    ADD COLUMN trip_too_long    integer NOT NULL DEFAULT 3600,      -- seconds
    ADD COLUMN trip_auto_pause  integer NOT NULL DEFAULT 604800,
    ADD COLUMN trip_max_pause   integer NOT NULL DEFAULT 604800,
    ADD COLUMN trip_auto_lock   integer NOT NULL DEFAULT 604800,
    ADD COLUMN min_guarantee    numeric(10, 3) NOT NULL DEFAULT 0,
    ADD COLUMN max_guarantee    numeric(10, 3) NOT NULL DEFAULT 0,
    ADD COLUMN organization_only boolean NOT NULL DEFAULT false,    -- seen by all, usable by its members
    ADD COLUMN exceptional_out_of_order_id bigint REFERENCES exceptional_out_of_orders(id);

ALTER TABLE clusters
    ADD COLUMN description          jsonb NOT NULL DEFAULT '{}',   -- {"en": "...", "fr": "..."}
    ADD COLUMN commissioning_date   timestamptz,
    ADD COLUMN soon_to_be_available boolean NOT NULL DEFAULT false,
    ADD COLUMN exceptional_out_of_order_id bigint REFERENCES exceptional_out_of_orders(id),
    ADD COLUMN max_unlock_distance  integer CHECK (max_unlock_distance BETWEEN 10 AND 1000),
    ADD COLUMN has_badge_reader     boolean NOT NULL DEFAULT false,
    ADD COLUMN balancing_type       text NOT NULL DEFAULT 'neutral'
        CHECK (balancing_type IN ('donor', 'receiver', 'neutral'));
CREATE INDEX clusters_position ON clusters (latitude, longitude);

ALTER TABLE stations ADD COLUMN mainboard_serial text;

CREATE TABLE virtual_parkings (
    id          bigserial PRIMARY KEY,
    network_id  bigint NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    cluster_id  bigint REFERENCES clusters(id) ON DELETE SET NULL,
    shape       jsonb NOT NULL,                      -- [[lng, lat], ...]
    radius      integer NOT NULL DEFAULT 50         -- metres around the cluster it follows
);

CREATE TABLE speed_zones (
    id          bigserial PRIMARY KEY,
    network_id  bigint NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    shape       jsonb NOT NULL,                      -- [[lng, lat], ...]
    max_speed   integer NOT NULL
);

CREATE TABLE countries (
    id            bigserial PRIMARY KEY,
    iso_2         text NOT NULL UNIQUE,
    iso_3         text NOT NULL,
    name          text NOT NULL,
    phone_prefix  text NOT NULL
);

-- Rents and passes as far as the map shows them; the rent routes come with their own issue.
CREATE TABLE rents (
    id                 bigserial PRIMARY KEY,
    user_id            bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    vehicle_id         bigint NOT NULL REFERENCES vehicles(id),
    network_id         bigint NOT NULL REFERENCES networks(id),
    free_floating      boolean NOT NULL DEFAULT false,
    time_start         timestamptz NOT NULL DEFAULT now(),
    billing_time_stop  timestamptz,
    on_hold_since      timestamptz,
    ended_at           timestamptz
);
CREATE INDEX rents_user_ongoing ON rents (user_id) WHERE ended_at IS NULL;

CREATE TABLE passes (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    network_id  bigint NOT NULL REFERENCES networks(id),
    start_date  timestamptz NOT NULL DEFAULT now(),
    end_date    timestamptz NOT NULL
);

ALTER TABLE vehicle_models ADD COLUMN min_battery_to_slow_down smallint NOT NULL DEFAULT 15,
                           ADD COLUMN min_battery_to_auto_lock smallint NOT NULL DEFAULT 5;
ALTER TABLE vehicles ADD COLUMN exceptional_out_of_order_id bigint REFERENCES exceptional_out_of_orders(id),
                     ADD COLUMN has_freefloat_to_station_reward boolean NOT NULL DEFAULT false;
CREATE INDEX vehicles_position ON vehicles (latitude, longitude) WHERE spot_id IS NULL;

CREATE TABLE discounts (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL,
    discount_type  text NOT NULL,                   -- add-credit, percent, free-minutes, ...
    type           integer NOT NULL DEFAULT 1,
    stop_date      date,
    code           text UNIQUE,                     -- null: granted, not redeemed by code
    data           numeric(12, 3) NOT NULL DEFAULT 0,
    currency       text NOT NULL DEFAULT 'EUR',
    network_id     bigint REFERENCES networks(id),  -- null: every network
    usable_in_shop boolean NOT NULL DEFAULT false
);

CREATE TABLE user_discounts (
    user_id      bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    discount_id  bigint NOT NULL REFERENCES discounts(id) ON DELETE CASCADE,
    granted_at   timestamptz NOT NULL DEFAULT now(),
    active       boolean NOT NULL DEFAULT true,
    PRIMARY KEY (user_id, discount_id)
);

CREATE TABLE wallet_entries (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amount       numeric(12, 3) NOT NULL,
    currency     text NOT NULL,
    discount_id  bigint REFERENCES discounts(id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, discount_id)                   -- a code credits a wallet once
);
