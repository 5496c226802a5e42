-- Badges (issue 9): RFID cards a rider links to the account, then shows at a station's reader to unlock.
--
-- The card's UID is never stored in clear: uid_hash is HMAC-SHA256 of the UID (upper-case hex) under a key
-- derived from the server's secret key (knot_rt/badges/service.py), so a copy of the table gives no UID and
-- no UID can be tried against it without the key. UNIQUE: a card belongs to one account. What the rider sees
-- of the card is masked_uid, its last 4 hex digits behind dots ("••••••3F1A").

CREATE TABLE badges (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    uid_hash    bytea NOT NULL UNIQUE CHECK (octet_length(uid_hash) = 32),
    masked_uid  text NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 30),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX badges_user ON badges (user_id, id);
