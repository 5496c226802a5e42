-- A hold that nears the provider's capture_before while its rent still goes on: the rider is warned once
-- (a guarantee.updated with "warning": "expiring"); this says when, so the warning is never sent twice.
ALTER TABLE guarantees ADD COLUMN expiry_warned_at timestamptz;
