-- Support chat (issue 12): reports (chat channels) of riders with the support agents of a network, their
-- messages in one order for both sides, images, read markers, assignment and resolution.

CREATE TABLE reports (
    id                  bigserial PRIMARY KEY,
    user_id             bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,   -- the author (the rider)
    network_id          bigint REFERENCES networks(id) ON DELETE SET NULL,       -- whose support agents answer
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    assigned_to         bigint REFERENCES users(id) ON DELETE SET NULL,           -- a support agent, or none
    -- What the report is about (each checked against what the rider may see when it is opened).
    vehicle_id          bigint REFERENCES vehicles(id) ON DELETE SET NULL,
    station_id          bigint REFERENCES stations(id) ON DELETE SET NULL,
    spot_id             bigint REFERENCES spots(id) ON DELETE SET NULL,
    cluster_id          bigint REFERENCES clusters(id) ON DELETE SET NULL,
    rent_id             bigint REFERENCES rents(id) ON DELETE SET NULL,
    latitude            double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude           double precision CHECK (longitude BETWEEN -180 AND 180),
    created_at          timestamptz NOT NULL DEFAULT now(),
    resolved_at         timestamptz,                                                -- writing reopens until +7 days
    last_message_id     bigint,
    user_read_up_to     bigint NOT NULL DEFAULT 0,                                  -- read markers, by message id
    support_read_up_to  bigint NOT NULL DEFAULT 0,
    mailed_at           timestamptz,                                                -- the last "support answered" mail
    CONSTRAINT reports_resolved_when CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE INDEX reports_user ON reports (user_id, id DESC);
CREATE INDEX reports_network ON reports (network_id, status, id DESC);

CREATE TABLE report_images (
    id            bigserial PRIMARY KEY,
    public_id     text NOT NULL UNIQUE,                     -- row 10's "id" (a string), in the image's URL
    report_id     bigint NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
    content_type  text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    data          bytea NOT NULL,                           -- re-encoded, metadata stripped
    width         integer NOT NULL CHECK (width > 0),
    height        integer NOT NULL CHECK (height > 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_images_report ON report_images (report_id);

-- One order for both sides: the message id.
CREATE TABLE report_messages (
    id          bigserial PRIMARY KEY,
    report_id   bigint NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
    side        text NOT NULL CHECK (side IN ('user', 'support')),
    author_id   bigint REFERENCES users(id) ON DELETE SET NULL,
    body        text CHECK (char_length(body) BETWEEN 1 AND 2000),
    image_id    bigint REFERENCES report_images(id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT report_messages_something CHECK (body IS NOT NULL OR image_id IS NOT NULL)
);
CREATE INDEX report_messages_report ON report_messages (report_id, id DESC);
