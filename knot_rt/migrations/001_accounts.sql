-- Accounts, authentication, permissions, white labels, consents, FAQ,
-- announcements and the mail outbox.

CREATE TABLE organizations (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    email_domain  text UNIQUE              -- accounts of this domain belong to it
);

CREATE TABLE app_labels (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL UNIQUE,  -- the app_label of requests
    label_name        text NOT NULL,         -- display name
    organization_id   bigint REFERENCES organizations(id),
    android_store_url text,
    ios_store_url     text
);

CREATE TABLE networks (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL,
    organization_id  bigint REFERENCES organizations(id),
    is_public        boolean NOT NULL DEFAULT true
);

CREATE TABLE network_app_labels (
    network_id    bigint NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    app_label_id  bigint NOT NULL REFERENCES app_labels(id) ON DELETE CASCADE,
    PRIMARY KEY (network_id, app_label_id)
);

CREATE TABLE clusters (
    id          bigserial PRIMARY KEY,
    network_id  bigint NOT NULL REFERENCES networks(id),
    name        text NOT NULL,
    latitude    double precision NOT NULL,
    longitude   double precision NOT NULL
);
CREATE INDEX clusters_network ON clusters (network_id);

CREATE TABLE users (
    id                  bigserial PRIMARY KEY,
    email               text NOT NULL,
    password_hash       text,                    -- argon2id; null for social-only accounts
    email_confirmed_at  timestamptz,
    lang                text NOT NULL DEFAULT 'en',
    app_label_id        bigint REFERENCES app_labels(id),
    totp_secret         text,                    -- encrypted with the service key
    totp_last_step      bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE user_identities (
    provider  text NOT NULL,
    subject   text NOT NULL,
    user_id   bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (provider, subject)
);

CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scope         text NOT NULL,
    device_id     text,
    device_os     text,
    device_model  text,
    app_version   text,
    app_label_id  bigint REFERENCES app_labels(id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

-- Rotating refresh tokens: one family per session; sha-256 of the token only.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Tokens mailed to the user (10 characters): sha-256 only.
CREATE TABLE email_tokens (
    token_hash    bytea PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose       text NOT NULL CHECK (purpose IN ('confirm', 'email_change', 'password_reset')),
    new_email     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);

-- A 2FA set-up in progress: the pending secret, until a code proves the app has it.
CREATE TABLE totp_setups (
    token_hash  bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret      text NOT NULL,                    -- encrypted with the service key
    expires_at  timestamptz NOT NULL
);

-- Organisational units and permissions, shaped as the login routes return them.
CREATE TABLE ous (
    id  bigserial PRIMARY KEY
);
CREATE TABLE ou_networks (
    ou_id       bigint NOT NULL REFERENCES ous(id) ON DELETE CASCADE,
    network_id  bigint NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    PRIMARY KEY (ou_id, network_id)
);
CREATE TABLE ou_clusters (
    ou_id       bigint NOT NULL REFERENCES ous(id) ON DELETE CASCADE,
    cluster_id  bigint NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    PRIMARY KEY (ou_id, cluster_id)
);
CREATE TABLE ou_app_labels (
    ou_id         bigint NOT NULL REFERENCES ous(id) ON DELETE CASCADE,
    app_label_id  bigint NOT NULL REFERENCES app_labels(id) ON DELETE CASCADE,
    PRIMARY KEY (ou_id, app_label_id)
);
CREATE TABLE ou_organizations (
    ou_id            bigint NOT NULL REFERENCES ous(id) ON DELETE CASCADE,
    organization_id  bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    PRIMARY KEY (ou_id, organization_id)
);
CREATE TABLE user_permissions (
    id        bigserial PRIMARY KEY,
    user_id   bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    perm_key  text NOT NULL,
    write     boolean NOT NULL DEFAULT false,
    ou_id     bigint NOT NULL REFERENCES ous(id) ON DELETE CASCADE
);
CREATE INDEX user_permissions_user ON user_permissions (user_id);

CREATE TABLE consent_types (
    key            text PRIMARY KEY,          -- e.g. emails.networkstatus
    names          jsonb NOT NULL,            -- {"en": "...", "fr": "..."}
    default_value  boolean NOT NULL DEFAULT false,
    sort_order     integer NOT NULL DEFAULT 0
);
CREATE TABLE user_consents (
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    type_key    text NOT NULL REFERENCES consent_types(key) ON DELETE CASCADE,
    value       boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, type_key)
);

CREATE TABLE faq_categories (
    key           text PRIMARY KEY,
    app_label_id  bigint REFERENCES app_labels(id) ON DELETE CASCADE,  -- null: every label
    sort_order    integer NOT NULL DEFAULT 0,
    names         jsonb NOT NULL
);
CREATE TABLE faq_sub_categories (
    key           text PRIMARY KEY,
    category_key  text NOT NULL REFERENCES faq_categories(key) ON DELETE CASCADE,
    sort_order    integer NOT NULL DEFAULT 0,
    is_spacer     boolean NOT NULL DEFAULT false,
    replacements  text[] NOT NULL DEFAULT '{}',
    names         jsonb NOT NULL
);
CREATE TABLE faq_contents (
    key               text PRIMARY KEY,
    sub_category_key  text NOT NULL REFERENCES faq_sub_categories(key) ON DELETE CASCADE,
    sort_order        integer NOT NULL DEFAULT 0,
    type              text NOT NULL DEFAULT 'text',
    bold              boolean NOT NULL DEFAULT false,
    margin            text,
    text_color        text,
    bullet_color      text,
    replacements      text[] NOT NULL DEFAULT '{}',
    contents          jsonb NOT NULL
);

CREATE TABLE announcements (
    id            bigserial PRIMARY KEY,
    app_label_id  bigint REFERENCES app_labels(id) ON DELETE CASCADE,  -- null: every label
    texts         jsonb NOT NULL,
    starts_at     timestamptz NOT NULL DEFAULT now(),
    ends_at       timestamptz
);

-- Mail written in the same transaction as the change that needs it, then sent.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    to_addr          text NOT NULL,
    subject          text NOT NULL,
    body             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    sent_at          timestamptz,
    last_error       text
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL;
