-- Maintenance (issue 13): the spot type the stations' faults other than a charge fault open
-- (communication fault, abnormal voltage: knot_rt/maintenance/automatic.py).
INSERT INTO maintenance_types (key, target_type, default_severity, names) VALUES
    ('spot-fault', 'spot', 'low', '{"en": "Spot fault", "fr": "Défaut de l''emplacement", "de": "Stellplatzfehler"}')
ON CONFLICT (key) DO NOTHING;
