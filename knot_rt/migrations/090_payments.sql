-- Bank guarantees and payment with Stripe (issue 11): a Stripe Customer per user, the user's saved payment
-- methods, the holds (manual-capture PaymentIntents), the durable capture/release jobs, and the webhook's
-- events applied once.

CREATE TABLE payment_customers (
    user_id      bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    provider     text NOT NULL DEFAULT 'stripe' CHECK (provider IN ('stripe')),
    customer_id  text NOT NULL UNIQUE,                   -- Stripe's cus_...
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- A saved payment method of a user (row 6's "instances"): our id is what the apps send
-- (user_payment_method_id); the provider's id stays here.
CREATE TABLE payment_instances (
    id                  bigserial PRIMARY KEY,
    user_id             bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    method_id           integer NOT NULL,                -- our payment method (1: card through Stripe)
    provider_method_id  text NOT NULL UNIQUE,            -- Stripe's pm_...
    card_brand          text,                            -- visa, mastercard, ...
    last4               text CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month           smallint CHECK (exp_month BETWEEN 1 AND 12),
    exp_year            smallint,
    card_networks       jsonb NOT NULL DEFAULT '[]',     -- ["cartes_bancaires", "visa"]
    preferred_network   text,
    is_default          boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_instances_user ON payment_instances (user_id);
CREATE UNIQUE INDEX payment_instances_one_default ON payment_instances (user_id) WHERE is_default;

-- A hold on the rider's card for one network: a PaymentIntent with capture_method=manual.
-- States: pending (created, not confirmed) -> requires_action (3-D Secure) -> usable (held) -> in_use (a rent
-- holds it) -> usable again (kept after the trip) or settling (a capture or release job) -> captured / released;
-- failed (declined), canceled (the rider cancelled it).
CREATE TABLE guarantees (
    id                 bigserial PRIMARY KEY,
    public_id          text NOT NULL UNIQUE,             -- what the apps see (row 4's "id": a string)
    user_id            bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    network_id         bigint NOT NULL REFERENCES networks(id),
    vehicle_id         bigint REFERENCES vehicles(id) ON DELETE SET NULL,  -- the vehicle it was made for
    instance_id        bigint REFERENCES payment_instances(id) ON DELETE SET NULL,
    amount             numeric(12, 3) NOT NULL CHECK (amount > 0),
    currency           text NOT NULL,
    status             text NOT NULL CHECK (status IN ('pending', 'requires_action', 'usable', 'in_use', 'settling',
                                                       'captured', 'released', 'failed', 'canceled')),
    payment_intent_id  text UNIQUE,                      -- Stripe's pi_...
    keep_after_trip    boolean NOT NULL DEFAULT false,
    capture_before     timestamptz,                      -- the provider's deadline for a capture of the hold
    keep_until         timestamptz,                      -- kept after a trip: released then (never after capture_before)
    captured_amount    numeric(12, 3) NOT NULL DEFAULT 0,
    provider_event_at  timestamptz,                      -- the newest provider event applied (never backwards)
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX guarantees_user ON guarantees (user_id, id DESC);
CREATE INDEX guarantees_usable ON guarantees (user_id, network_id) WHERE status IN ('usable', 'in_use');

-- A rent tied to the guarantee it was allowed with; what it could not capture is owed.
ALTER TABLE rents
    ADD COLUMN guarantee_id  bigint REFERENCES guarantees(id) ON DELETE SET NULL,
    ADD COLUMN amount_owed   numeric(12, 3);

-- A capture or a release of a hold, done by the payments worker until it succeeds; the idempotency key is
-- derived from our ids, so a retry after a crash or an outage never charges twice.
CREATE TABLE payment_jobs (
    id               bigserial PRIMARY KEY,
    guarantee_id     bigint NOT NULL REFERENCES guarantees(id) ON DELETE CASCADE,
    rent_id          bigint REFERENCES rents(id) ON DELETE SET NULL,
    kind             text NOT NULL CHECK (kind IN ('capture', 'release')),
    amount           numeric(12, 3) NOT NULL DEFAULT 0 CHECK (amount >= 0),  -- captured (release: 0)
    idempotency_key  text NOT NULL UNIQUE,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    done_at          timestamptz
);
CREATE INDEX payment_jobs_due ON payment_jobs (next_attempt_at) WHERE state = 'pending';

-- The provider's webhook events applied, by id: the same event twice is applied once.
CREATE TABLE payment_events (
    event_id     text PRIMARY KEY,
    type         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
