"""The catalog's SQL for the reads its routes make beyond the in-memory catalog (called by ``catalog_service.py``).

Each function is an asyncio-side unit of work given to ``Database.run`` whole.
"""

from __future__ import annotations

import asyncpg

from .catalog import VEHICLE_FACT_COLUMNS

# The caller's open rents (with their vehicle's facts and spot) and current passes, for the map.
RENTS_AND_PASSES = f"""
SELECT 'rent' AS kind, r.id, r.vehicle_id, r.network_id, r.free_floating, r.time_start, r.billing_time_stop,
       r.on_hold_since, NULL::timestamptz AS end_date, NULL::boolean AS in_use,
       {VEHICLE_FACT_COLUMNS},
       s.station_id, s.number AS spot_number, s.displayed_number, s.lock_status
FROM rents r
JOIN vehicles v ON v.id = r.vehicle_id
LEFT JOIN vehicle_models m ON m.id = v.model_id
LEFT JOIN exceptional_out_of_orders o ON o.id = v.exceptional_out_of_order_id
LEFT JOIN spots s ON s.id = v.spot_id
WHERE r.user_id = $1 AND r.ended_at IS NULL
UNION ALL
SELECT 'pass', p.id, NULL, p.network_id, NULL, NULL, NULL, NULL, p.end_date, p.start_date <= now(),
       {", ".join(["NULL"] * (VEHICLE_FACT_COLUMNS.count(",") + 1))}, NULL, NULL, NULL, NULL
FROM passes p
WHERE p.user_id = $1 AND p.end_date > now()
ORDER BY kind DESC, id
"""


async def rents_and_passes(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(RENTS_AND_PASSES, user_id)
    return rows
