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

-- A session revoked (logout, password change, refresh token reused) or deleted with its account: every
-- process drops it from its session cache and closes its feed sockets. Sent at commit, never on a rollback.
CREATE FUNCTION knot_session_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('knot_sessions', OLD.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION knot_session_revoked();
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION knot_session_revoked();

-- The catalog's tables changed (by any process, a CLI command or a script): every process reads it again.
CREATE FUNCTION knot_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('knot_catalog', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER networks_changed AFTER INSERT OR UPDATE OR DELETE ON networks
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER network_app_labels_changed AFTER INSERT OR UPDATE OR DELETE ON network_app_labels
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER clusters_changed AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER virtual_parkings_changed AFTER INSERT OR UPDATE OR DELETE ON virtual_parkings
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER speed_zones_changed AFTER INSERT OR UPDATE OR DELETE ON speed_zones
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER vehicle_models_changed AFTER INSERT OR UPDATE OR DELETE ON vehicle_models
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER app_labels_changed AFTER INSERT OR UPDATE OR DELETE ON app_labels
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER exceptional_out_of_orders_changed AFTER INSERT OR UPDATE OR DELETE ON exceptional_out_of_orders
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
-- Vehicles: only their static facts (the live columns change at every report and are the actors').
CREATE TRIGGER vehicles_added AFTER INSERT OR DELETE ON vehicles
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();
CREATE TRIGGER vehicles_facts_changed AFTER UPDATE OF serial_number, model_id, network_id, exceptional_out_of_order_id, avg_max_range,
    has_freefloat_to_station_reward, free_floating ON vehicles
    FOR EACH STATEMENT EXECUTE FUNCTION knot_catalog_changed();

-- What a user sees and may use changed (``services/access.py``): every process forgets its cached access
-- of that user ('*': of every user, when an organisational unit or an organisation changed).
CREATE FUNCTION knot_user_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('knot_access', OLD.user_id::text);
    ELSE
        PERFORM pg_notify('knot_access', NEW.user_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER user_permissions_changed AFTER INSERT OR UPDATE OR DELETE ON user_permissions
    FOR EACH ROW EXECUTE FUNCTION knot_user_access_changed();
CREATE FUNCTION knot_user_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('knot_access', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER users_access_changed AFTER UPDATE OF email, app_label_id ON users
    FOR EACH ROW EXECUTE FUNCTION knot_user_changed();
CREATE FUNCTION knot_all_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('knot_access', '*');
    RETURN NULL;
END $$;
CREATE TRIGGER organizations_changed AFTER INSERT OR UPDATE OR DELETE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION knot_all_access_changed();
CREATE TRIGGER ou_networks_changed AFTER INSERT OR UPDATE OR DELETE ON ou_networks
    FOR EACH STATEMENT EXECUTE FUNCTION knot_all_access_changed();
CREATE TRIGGER ou_clusters_changed AFTER INSERT OR UPDATE OR DELETE ON ou_clusters
    FOR EACH STATEMENT EXECUTE FUNCTION knot_all_access_changed();
CREATE TRIGGER ou_app_labels_changed AFTER INSERT OR UPDATE OR DELETE ON ou_app_labels
    FOR EACH STATEMENT EXECUTE FUNCTION knot_all_access_changed();
CREATE TRIGGER ou_organizations_changed AFTER INSERT OR UPDATE OR DELETE ON ou_organizations
    FOR EACH STATEMENT EXECUTE FUNCTION knot_all_access_changed();

-- Rate limits counted by every process together (``services/ratelimit.py``, the cluster mode): hits per
-- key in fixed windows; rows of past windows are pruned.
CREATE UNLOGGED TABLE rate_counts (
    namespace     text NOT NULL,
    key           text NOT NULL,
    window_start  bigint NOT NULL,   -- epoch seconds, a multiple of the rate's period
    hits          integer NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (namespace, key, window_start)
);
CREATE INDEX rate_counts_expiry ON rate_counts (expires_at);
