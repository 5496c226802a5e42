-- Rents at stations (issue 9): the rent's life, its price, and what the station reported of it.
-- States: unlocking -> ongoing <-> paused -> ended, or unlocking -> failed. The vehicle's actor is the
-- one writer of its current rent; the partial unique index below makes a second current rent of one
-- vehicle impossible even so.

ALTER TABLE rents
    ADD COLUMN state           text NOT NULL DEFAULT 'ongoing'
        CHECK (state IN ('unlocking', 'ongoing', 'paused', 'ended', 'failed')),
    ADD COLUMN requested_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN unlock_id       bigint UNIQUE,         -- the station `unlock` command's id, echoed by `unlocked`
    ADD COLUMN via             text NOT NULL DEFAULT 'app' CHECK (via IN ('app', 'badge')),
    ADD COLUMN station_id      bigint REFERENCES stations(id) ON DELETE SET NULL,   -- where it started
    ADD COLUMN spot            integer,
    ADD COLUMN end_station_id  bigint REFERENCES stations(id) ON DELETE SET NULL,   -- where it was returned
    ADD COLUMN end_spot        integer,
    ADD COLUMN failure         text,                  -- why an unlock failed
    ADD COLUMN too_long_warned boolean NOT NULL DEFAULT false,
    ADD COLUMN currency        text,
    ADD COLUMN price           numeric(12, 3),        -- set when the rent ends
    ADD COLUMN paid_by_wallet  numeric(12, 3),
    ADD COLUMN amount_due      numeric(12, 3);        -- what the payments part will charge

UPDATE rents SET state = 'ended' WHERE ended_at IS NOT NULL;
ALTER TABLE rents ADD CONSTRAINT rents_over_when_ended CHECK ((state IN ('ended', 'failed')) = (ended_at IS NOT NULL));

CREATE UNIQUE INDEX rents_vehicle_current ON rents (vehicle_id) WHERE state IN ('unlocking', 'ongoing', 'paused');
CREATE INDEX rents_user_history ON rents (user_id, id DESC);

-- The per-network tariff, in the network's currency.
ALTER TABLE networks
    ADD COLUMN unlock_fee       numeric(10, 3) NOT NULL DEFAULT 0 CHECK (unlock_fee >= 0),
    ADD COLUMN price_per_minute numeric(10, 3) NOT NULL DEFAULT 0 CHECK (price_per_minute >= 0);

-- Wallet credit spent on a rent: one entry per rent at most.
ALTER TABLE wallet_entries ADD COLUMN rent_id bigint UNIQUE REFERENCES rents(id);

-- Reconciliation after a restart: the `unlocked` of an unlock id, the `locked` of a vehicle.
CREATE INDEX station_messages_unlocked ON station_messages (((payload ->> 'unlock')))
    WHERE action = 'unlocked';
CREATE INDEX station_messages_locked ON station_messages (((payload ->> 'vehicle')), received_at)
    WHERE action = 'locked';
