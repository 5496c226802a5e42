-- Several server processes on one database (knot_rt/cluster/): calls between processes, and what every
-- process must hear of at once (a session revoked, the catalog changed), told by the database itself.

-- A call from one process to another (an operator command or a rent for a station whose socket the other
-- holds). The row carries the request and, once answered, the answer; NOTIFY carries only its id.
CREATE TABLE cluster_calls (
    id             bigserial PRIMARY KEY,
    caller         integer NOT NULL,            -- the calling process's node (its link's backend pid)
    callee         integer NOT NULL,
    op             text NOT NULL,
    args           jsonb NOT NULL,
    answered       boolean NOT NULL DEFAULT false,
    reply          jsonb,
    error_code     integer,
    error_message  text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cluster_calls_created ON cluster_calls (created_at);

-- One trigger function for every notification below. TG_ARGV[0] is the channel; TG_ARGV[1] the payload:
-- ':<column>' for that column of the row (OLD's on DELETE, NEW's otherwise), '%table' for the table's
-- name, any other text as it is. A notification is sent at commit, never on a rollback.
CREATE FUNCTION knot_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := TG_ARGV[1];
BEGIN
    IF payload = '%table' THEN
        payload := TG_TABLE_NAME;
    ELSIF left(payload, 1) = ':' THEN
        IF TG_OP = 'DELETE' THEN
            payload := to_jsonb(OLD) ->> substr(payload, 2);
        ELSE
            payload := to_jsonb(NEW) ->> substr(payload, 2);
        END IF;
    END IF;
    PERFORM pg_notify(TG_ARGV[0], payload);
    RETURN NULL;
END $$;

-- A session revoked (logout, password change, refresh token reused) or deleted with its account: every
-- process drops it from its session cache and closes its feed sockets.
CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION knot_notify('knot_sessions', ':id');
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION knot_notify('knot_sessions', ':id');

-- The catalog's tables changed (by any process, a CLI command or a script): every process reads it again.
CREATE TRIGGER networks_changed AFTER INSERT OR UPDATE OR DELETE ON networks
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER network_app_labels_changed AFTER INSERT OR UPDATE OR DELETE ON network_app_labels
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER clusters_changed AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER virtual_parkings_changed AFTER INSERT OR UPDATE OR DELETE ON virtual_parkings
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER speed_zones_changed AFTER INSERT OR UPDATE OR DELETE ON speed_zones
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER vehicle_models_changed AFTER INSERT OR UPDATE OR DELETE ON vehicle_models
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER app_labels_changed AFTER INSERT OR UPDATE OR DELETE ON app_labels
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER exceptional_out_of_orders_changed AFTER INSERT OR UPDATE OR DELETE ON exceptional_out_of_orders
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
-- Vehicles: only their static facts (the live columns change at every report and are the actors').
CREATE TRIGGER vehicles_added AFTER INSERT OR DELETE ON vehicles
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');
CREATE TRIGGER vehicles_facts_changed AFTER UPDATE OF serial_number, model_id, network_id, exceptional_out_of_order_id,
    avg_max_range, has_freefloat_to_station_reward, free_floating ON vehicles
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_catalog', '%table');

-- What a user sees and may use changed (``services/access.py``): every process forgets its cached access
-- of that user ('*': of every user, when an organisational unit or an organisation changed).
CREATE TRIGGER user_permissions_changed AFTER INSERT OR UPDATE OR DELETE ON user_permissions
    FOR EACH ROW EXECUTE FUNCTION knot_notify('knot_access', ':user_id');
CREATE TRIGGER users_access_changed AFTER UPDATE OF email, app_label_id ON users
    FOR EACH ROW EXECUTE FUNCTION knot_notify('knot_access', ':id');
CREATE TRIGGER organizations_changed AFTER INSERT OR UPDATE OR DELETE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_access', '*');
CREATE TRIGGER ou_networks_changed AFTER INSERT OR UPDATE OR DELETE ON ou_networks
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_access', '*');
CREATE TRIGGER ou_clusters_changed AFTER INSERT OR UPDATE OR DELETE ON ou_clusters
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_access', '*');
CREATE TRIGGER ou_app_labels_changed AFTER INSERT OR UPDATE OR DELETE ON ou_app_labels
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_access', '*');
CREATE TRIGGER ou_organizations_changed AFTER INSERT OR UPDATE OR DELETE ON ou_organizations
    FOR EACH STATEMENT EXECUTE FUNCTION knot_notify('knot_access', '*');

-- Rate limits counted by every process together (``services/ratelimit.py``, the cluster mode): hits per
-- key and window, read with the previous window's (a sliding window counter); a row is kept two periods,
-- then pruned.
CREATE UNLOGGED TABLE rate_counts (
    namespace     text NOT NULL,
    key           text NOT NULL,
    window_start  bigint NOT NULL,   -- epoch seconds, a multiple of the rate's period
    hits          integer NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (namespace, key, window_start)
);
CREATE INDEX rate_counts_expiry ON rate_counts (expires_at);
