-- Free-floating vehicles (issue 10): their own socket (vehicle-protocol.md), their live readings, the
-- durable vehicle events, and the rents that pause, resume and end anywhere allowed.

-- A vehicle with an IoT module: it authenticates with its serial number and a secret (stored hashed).
ALTER TABLE vehicles
    ADD COLUMN free_floating  boolean NOT NULL DEFAULT false,
    ADD COLUMN secret_hash    text,
    ADD COLUMN speed          real CHECK (speed >= 0),          -- km/h, last reported
    ADD COLUMN locked         boolean,                           -- its own lock, last reported
    ADD COLUMN reported_at    timestamptz,                       -- its last `status`
    ADD CONSTRAINT vehicles_secret_of_free_floating CHECK (secret_hash IS NULL OR free_floating),
    ADD CONSTRAINT vehicles_serial_shape CHECK (
        length(serial_number) BETWEEN 1 AND 64 AND position(':' IN serial_number) = 0
    ) NOT VALID;  -- vehicles from before keep whatever serial they had

-- Every vehicle CALL applied, by its id: a repeated id is answered with the same RESULT and applied once.
CREATE TABLE vehicle_messages (
    vehicle_id   bigint NOT NULL REFERENCES vehicles(id) ON DELETE CASCADE,
    message_id   text NOT NULL,
    action       text NOT NULL,
    payload      jsonb NOT NULL,
    result       jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vehicle_id, message_id)
);
CREATE INDEX vehicle_messages_received ON vehicle_messages (received_at);
-- Reconciliation after a restart: the `unlocked` of a command id, the `locked` of a command id.
CREATE INDEX vehicle_messages_command ON vehicle_messages (vehicle_id, action, ((payload ->> 'unlock')), ((payload ->> 'lock')))
    WHERE action IN ('unlocked', 'locked');

-- A free-floating rent's command on its way to the vehicle (the id the vehicle echoes), what it is for,
-- the trip timers' inputs, and where it ended.
ALTER TABLE rents
    ADD COLUMN command          text CHECK (command IN ('resume', 'pause', 'end')),
    ADD COLUMN command_id       bigint UNIQUE,
    ADD COLUMN command_at       timestamptz,
    ADD COLUMN moved_at         timestamptz,                     -- last movement seen while riding
    ADD COLUMN end_latitude     double precision,
    ADD COLUMN end_longitude    double precision,
    ADD COLUMN ended_by         text CHECK (ended_by IN ('rider', 'auto_lock', 'max_pause', 'station')),
    ADD CONSTRAINT rents_command_with_id CHECK ((command IS NULL) = (command_id IS NULL)),
    ADD CONSTRAINT rents_paused_on_hold CHECK ((state = 'paused') = (on_hold_since IS NOT NULL) OR state IN ('ended', 'failed'));
